package govern_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strings"

	"github.com/crm-mcp/crm-mcp/stepup"
)

func urlUnescape(s string) (string, error) { return url.QueryUnescape(s) }

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func bytesReader(s string) *strings.Reader { return strings.NewReader(s) }

func newTerms() (*stepup.Terms, error) { return stepup.NewTerms(stepup.DefaultSensitiveTerms) }

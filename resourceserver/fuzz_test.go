package resourceserver_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// FuzzVerify feeds arbitrary Authorization header values through the
// middleware and arbitrary strings through Verify. Whatever comes in: no
// panic, never a 5xx for what a client sent, and nothing is accepted but
// the genuine token the seed corpus starts from.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	valid := fx.as.Mint(fx.claims("crm.contacts.read"))
	es := fx.as.Mint(fx.claims("crm.contacts.read"), rstest.WithAlg("ES256"))
	accepted := map[string]bool{valid: true, es: true}

	seeds := []string{
		"Bearer " + valid,
		"Bearer " + es,
		"bearer " + valid,
		"Bearer " + fx.as.Mint(fx.claims(), rstest.WithUnsigned()),
		"Bearer " + fx.as.Mint(fx.claims(), rstest.WithHMAC([]byte("0123456789abcdef0123456789abcdef"))),
		"Bearer " + fx.as.Mint(fx.claims(), rstest.WithTamperedSignature()),
		"Bearer " + fx.as.Mint(fx.claims(), rstest.WithHeader("crit", []string{"x"})),
		"Bearer " + fx.as.Mint(with(fx.claims(), "aud", []any{1, 2})),
		"Bearer " + fx.as.Mint(with(fx.claims(), "exp", "soon")),
		"Bearer " + valid + "=",
		"Bearer " + strings.Replace(valid, ".", "..", 1),
		"Bearer a.b.c",
		"Bearer e30.e30.",
		"Bearer ....",
		"Bearer ",
		"Basic dTpw",
		"",
		"Bearer " + strings.Repeat("A", 20000),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	h := fx.rs.Middleware(httpOK)
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest("POST", "/mcp", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		scheme, raw, _ := strings.Cut(header, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			raw = ""
		}
		raw = strings.TrimLeft(raw, " ")
		if w.Code >= 500 {
			t.Fatalf("status %d for a client-supplied header", w.Code)
		}
		if w.Code == 200 && !accepted[raw] {
			t.Fatalf("accepted a header that is not a genuine token (len %d)", len(header))
		}
		if w.Code != 200 && len(w.Header().Values("WWW-Authenticate")) != 1 && w.Code != 403 {
			t.Fatalf("status %d with %d challenges", w.Code, len(w.Header().Values("WWW-Authenticate")))
		}

		tok, err := fx.rs.Verify(context.Background(), header)
		if err == nil && !accepted[header] {
			t.Fatalf("Verify accepted a string that is not a genuine token (len %d)", len(header))
		}
		if err != nil && tok != nil {
			t.Fatal("Verify returned a token with an error")
		}
		if err == nil && tok.Subject == "" {
			t.Fatal("accepted a token without subject")
		}
		if err != nil && !errors.Is(err, resourceserver.ErrInvalidToken) {
			t.Fatalf("a bad token must be invalid_token, got %v", err)
		}
	})
}

package audit

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadTail(t *testing.T) {
	long := strings.Repeat("x", 200<<10) // longer than a read chunk
	tests := []struct {
		file, last, torn string
		noLast           bool
	}{
		{file: "", noLast: true},
		{file: "abc", torn: "abc", noLast: true},
		{file: "\n", last: ""},
		{file: "a\n", last: "a"},
		{file: "a\nbc", last: "a", torn: "bc"},
		{file: "a\nbc\n", last: "bc"},
		{file: "a\nbc\nd", last: "bc", torn: "d"},
		{file: "\nbc\n", last: "bc"},
		{file: "a\n" + long + "\n" + long, last: long, torn: long},
		{file: long + "\n" + long + "\n", last: long},
	}
	for _, tt := range tests {
		last, torn, err := readTail(bytes.NewReader([]byte(tt.file)), int64(len(tt.file)))
		require.NoError(t, err)
		name := tt.file[:min(len(tt.file), 8)]
		assert.Equal(t, tt.noLast, last == nil, "%q", name)
		assert.Equal(t, tt.last, string(last), "%q", name)
		assert.Equal(t, tt.torn, string(torn), "%q", name)
	}
}

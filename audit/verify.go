package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Summary describes a log that verified.
type Summary struct {
	// Records is the number of complete lines, all chained.
	Records int
	// Head is the SHA-256 of the last complete line ("" without one): the
	// value the next line's prev will hold. Kept elsewhere, it shows
	// whether the file was later shortened.
	Head string
	// TornBytes is the size of an incomplete final line, left by a crash
	// during a write; it is not a record (see the package documentation).
	TornBytes int
}

// LineError is the first line of a log that does not verify.
type LineError struct {
	Line   int // 1-based
	Reason string
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// header is what Verify reads of a line; the hash covers the rest.
type header struct {
	Seq   *uint64 `json:"seq"`
	Prev  *string `json:"prev"`
	Time  *string `json:"time"`
	Event *string `json:"event"`
}

// Verify reads a whole log and checks its chain: every line is a JSON
// object ending in "\n", with seq 1, 2, 3... and a prev equal to the
// SHA-256 of the line before it (64 zeros for the first). It returns a
// *LineError for the first line that fails, or another error when r
// cannot be read. A torn final line is accepted and reported in
// Summary.TornBytes; the package documentation says why.
//
// An edited line is reported at the line after it, whose prev no longer
// matches; a removed or reordered line where the seq numbers break.
func Verify(r io.Reader) (Summary, error) {
	var s Summary
	br := bufio.NewReaderSize(r, 64<<10)
	prev := genesis
	for n := 1; ; n++ {
		b, err := readLine(br)
		if errors.Is(err, io.EOF) {
			s.TornBytes = len(b)
			return s, nil
		}
		if errors.Is(err, errLineTooLong) {
			return s, &LineError{Line: n, Reason: fmt.Sprintf("longer than %d bytes: not an audit record", maxLine)}
		}
		if err != nil {
			return s, err
		}
		if reason := checkLine(b, uint64(n), prev); reason != "" {
			return s, &LineError{Line: n, Reason: reason}
		}
		prev = hashHex(b)
		s.Records = n
		s.Head = prev
	}
}

// checkLine returns why line b, expected to be record number seq after a
// line hashing to prev, is bad, or "".
func checkLine(b []byte, seq uint64, prev string) string {
	if len(b) == 0 {
		return "empty line"
	}
	var h header
	if err := json.Unmarshal(b, &h); err != nil {
		return "not an audit record: " + err.Error()
	}
	switch {
	case h.Seq == nil:
		return "no seq"
	case *h.Seq > seq:
		return fmt.Sprintf("seq is %d, want %d: %d line(s) missing before it, or lines out of order", *h.Seq, seq, *h.Seq-seq)
	case *h.Seq < seq:
		return fmt.Sprintf("seq is %d, want %d: a line repeated or out of order", *h.Seq, seq)
	case h.Prev == nil:
		return "no prev"
	case *h.Prev != prev && seq == 1:
		return "prev of the first line must be 64 zeros"
	case *h.Prev != prev:
		return fmt.Sprintf("prev is not the SHA-256 of line %d: line %d was changed (or this line's prev)", seq-1, seq-1)
	case h.Event == nil || *h.Event == "":
		return "no event"
	case h.Time == nil:
		return "no time"
	}
	if _, err := time.Parse(time.RFC3339Nano, *h.Time); err != nil {
		return fmt.Sprintf("time %q is not RFC 3339", *h.Time)
	}
	return ""
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its "\n". At the end of the
// input it returns the bytes after the last "\n" with io.EOF.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > maxLine+1 {
			return nil, errLineTooLong
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return bytes.TrimSuffix(line, []byte("\n")), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

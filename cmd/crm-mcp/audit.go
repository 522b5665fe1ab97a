package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/crm-mcp/crm-mcp/audit"
)

const auditUsage = `usage: crm-mcp audit verify [--allow-torn] FILE

Checks the hash chain of an audit log (AUDIT_LOG_PATH): exit 0 when it is
intact, 1 naming the first bad line. A file whose last line has no final
newline is not intact: a crash during a write leaves one, but so does
someone who edited the last line and dropped its newline. With
--allow-torn, for the file of a server that crashed, such a line is
reported and accepted, not as a record; the server removes it, on record,
when it next opens the log. Compare the printed head with a copy kept
elsewhere to detect a log whose last lines were removed.
`

// audit runs "crm-mcp audit <subcommand>".
func (a *app) audit(_ context.Context, args []string) int {
	if len(args) == 1 && isHelp(args[0]) || len(args) == 2 && args[0] == "verify" && isHelp(args[1]) {
		fmt.Fprint(a.stdout, auditUsage)
		return 0
	}
	allowTorn := len(args) == 3 && args[0] == "verify" && args[1] == "--allow-torn"
	if allowTorn {
		args = []string{args[0], args[2]}
	}
	if len(args) != 2 || args[0] != "verify" || strings.HasPrefix(args[1], "-") {
		fmt.Fprint(a.stderr, auditUsage)
		return 2
	}
	path := args[1]
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(a.stderr, "crm-mcp audit verify: %v\n", err)
		return 1
	}
	defer f.Close()
	s, err := audit.Verify(f)
	var le *audit.LineError
	switch {
	case errors.As(err, &le):
		fmt.Fprintf(a.stderr, "crm-mcp audit verify: %s: NOT INTACT: %v\n", path, err)
		return 1
	case err != nil:
		fmt.Fprintf(a.stderr, "crm-mcp audit verify: %s: %v\n", path, err)
		return 1
	}
	head := s.Head
	if head == "" {
		head = "none (no records)"
	}
	if s.TornBytes > 0 && !allowTorn {
		fmt.Fprintf(a.stderr, "crm-mcp audit verify: %s: NOT INTACT: line %d: no final newline (%d bytes): a torn line left by a crash, or an edited last line; "+
			"the %d records before it verify, head %s (--allow-torn accepts the file of a server that crashed)\n", path, s.Records+1, s.TornBytes, s.Records, head)
		return 1
	}
	fmt.Fprintf(a.stdout, "%s: intact: %d records, head %s\n", path, s.Records, head)
	if s.TornBytes > 0 {
		fmt.Fprintf(a.stdout, "%s: note: ends with a torn line of %d bytes (a crash during a write); it is not a record\n", path, s.TornBytes)
	}
	return 0
}

func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

// Package audit writes and verifies crm-mcp's audit trail: one JSON line
// per authorization decision, each line carrying the SHA-256 of the line
// before it, so that editing, removing or reordering a line is detected.
//
//	log, err := audit.Open("/data/audit.log", audit.Options{})
//	if err != nil { ... } // the server must not start without its audit trail
//	defer log.Close()
//	...
//	if err := log.Record(ctx, audit.Event{Kind: audit.StepUpApproved, Tool: "get_contact", ...}); err != nil {
//		// fail the call: the decision is not on record
//	}
//
// # Lines
//
// A line is a JSON object followed by "\n". Its first two members are the
// chain: "seq", the record's number (1 for the first line of a file, then
// +1 per line, across restarts), and "prev", the lowercase hex SHA-256 of
// the previous line's bytes exactly as written, without its "\n". The first
// line's prev is 64 zeros. Then come "time" (RFC 3339, UTC), "event" (a
// [Kind]) and the event's fields, empty ones omitted.
//
// The hash covers bytes, not a re-encoding, so a verifier in any language
// needs only a line splitter and SHA-256, and any change to a line, even
// whitespace, breaks the next line's prev.
//
// # Durability and crashes
//
// [Log.Record] writes a whole line with one write and, for a decision (and
// a write's tool.called "started" line), fsyncs the file before it returns,
// so a caller that acts only after Record returns nil acts only on a
// decision that is on disk. The outcome of a call that already ran
// (tool.called ok, error, invalid) acts on nothing: it is written at once
// and reaches the disk with the next synced line or Close, so a crash or a
// power loss may cost the last outcomes, never a decision. A failed write or fsync makes
// the Log refuse its events (fail closed) until it can write again: the
// next Record then cuts the file back to its last synced line (after a
// failed write or fsync nothing past it is known to be on disk), appends
// a [Recovered] event saying since when, how many events were refused and
// how many unsynced lines were cut away, and goes on, with no restart.
//
// Strings are written with every control, format, bidi and invisible
// character as a JSON \uXXXX escape, the characters a Duo Push escapes
// for its approver: the bytes show what the line says in a terminal, and
// a JSON reader decodes the exact value.
//
// A [Tally] counts the requests the front door refuses and writes one
// auth.failed line per reason and source per interval, unsynced, instead
// of a synced line each (see Tally for why).
//
// A crash during a write (kill -9, the process dying any other way) can
// leave only one defect: a torn final line, bytes after the last "\n". Its
// Record never returned, so nothing was acted on because of it. The rule:
//
//   - [Verify] accepts a torn final line, reports its size in
//     [Summary.TornBytes], and does not count it as a record; the
//     crm-mcp audit verify command fails such a file unless told
//     (--allow-torn) that it reads a crashed server's file, since an
//     edited last line without its newline looks the same. Accepting it
//     costs nothing: whoever can cut a file mid-line can as well cut it at a
//     line boundary, which no hash chain detects on its own (see below).
//     Anything else, such as an incomplete line followed by more lines, an
//     empty line or a line that is not JSON, is rejected.
//   - [Open] truncates a torn final line away, then appends a
//     [Recovered] event that records its size and SHA-256, chained to the
//     last complete line. The chain goes on from there.
//
// A crash between the write and the fsync can leave a complete line whose
// Record never returned: a decision on record that was not acted on. Every
// outcome is recorded separately ([ToolCalled]), so such a line is
// followed by no outcome.
//
// A power loss leaves the same on filesystems that write a file's data
// before its new size, such as ext4 in its default data=ordered mode:
// every earlier line was synced, and only the last write is in doubt. On
// others the last line may hold garbage (zeros, say) yet end in "\n";
// Verify rejects it, naming the last line, and Open refuses the file.
//
// # What the chain does not prove
//
// Removing the last lines of a file, or rewriting the last line, leaves a
// chain that verifies. [Summary] gives the record count and the hash of the
// last line (the head): compare them with a copy kept elsewhere (a log
// shipper, a SIEM) to detect a shortened file.
//
// Without a path the log goes to a writer (standard output), unsynced, and
// each start begins a new chain at seq 1: the reader of that stream cannot
// be asked for its last line.
package audit

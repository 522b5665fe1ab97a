package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/crm-mcp/crm-mcp/audit"
)

func Example() {
	var buf bytes.Buffer // a file from audit.Open in the server
	log := audit.New(&buf, audit.Options{})
	ctx := context.Background()
	at := time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)
	log.Record(ctx, audit.Event{Time: at, Kind: audit.StepUpApproved, Subject: "alice", Tool: "get_contact", Args: json.RawMessage(`{"id":6}`), DuoTxID: "tx-1"})
	log.Record(ctx, audit.Event{Time: at, Kind: audit.ToolCalled, Subject: "alice", Tool: "get_contact", Outcome: "ok", Duration: 3 * time.Millisecond})

	s, err := audit.Verify(bytes.NewReader(buf.Bytes()))
	fmt.Println(s.Records, err)

	tampered := strings.Replace(buf.String(), `"subject":"alice"`, `"subject":"bob"`, 1)
	_, err = audit.Verify(strings.NewReader(tampered))
	fmt.Println(err)
	// Output:
	// 2 <nil>
	// line 2: prev is not the SHA-256 of line 1: line 1 was changed (or this line's prev)
}

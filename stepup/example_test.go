package stepup_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

func ExampleGuard_Approve() {
	duo := duotest.NewServer() // in production: the Duo Auth API
	defer duo.Close()
	duo.Script("alice", duotest.Approve)
	duo.Script("bob", duotest.Deny)

	guard, err := stepup.New(stepup.Config{
		IKey: duo.IKey(), SKey: duo.SKey(), Host: duo.Host(),
		CACertPEM: duo.CACertPEM(), // only because the fake is not Duo
	})
	if err != nil {
		panic(err)
	}
	terms, _ := stepup.NewTerms(stepup.DefaultSensitiveTerms)

	args := json.RawMessage(`{"query":"Defence contractors"}`)
	term, sensitive := terms.Find(args)
	fmt.Println("sensitive:", sensitive, term)

	for _, user := range []string{"alice", "bob"} {
		err := guard.Approve(context.Background(), stepup.Request{
			User:   user, // from the verified access token
			Tool:   "list_contacts",
			Reason: fmt.Sprintf("query mentions %q", term),
			Action: `Search contacts for "Defence contractors"`,
			Key:    stepup.CanonicalKey("list_contacts", args),
		}, func(msg string) { fmt.Println("progress:", msg) })
		if err != nil {
			fmt.Println(user, "refused:", err.(*stepup.Error).Outcome)
			continue
		}
		fmt.Println(user, "approved")
	}
	// Output:
	// sensitive: true defence
	// progress: Waiting for Duo Push approval on your phone (tool list_contacts)
	// alice approved
	// progress: Waiting for Duo Push approval on your phone (tool list_contacts)
	// bob refused: denied
}

package crm_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/crm-mcp/crm-mcp/crm"
)

// A listing tool asks the store for what the user may see. Whether it asks
// for restricted records too is decided from the request (approved, say,
// because it asked for them), never from what a search would match.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "crm-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := crm.Open(ctx, filepath.Join(dir, "crm.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	contacts, err := store.ListContacts(ctx, crm.ContactFilter{})
	if err != nil {
		log.Fatal(err)
	}
	withheld, err := store.CountRestricted(ctx, crm.ContactFilter{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d contacts shown, restricted contacts withheld: %d\n", len(contacts), withheld)

	f := crm.ContactFilter{Query: "aegis"}
	contacts, err = store.ListContacts(ctx, f)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d contacts match %q without approval\n", len(contacts), f.Query)

	f.IncludeRestricted = true // only once the request was approved
	contacts, err = store.ListContacts(ctx, f)
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range contacts {
		fmt.Printf("%s, %s (%s, %s)\n", c.Name, c.Company, c.Sector, c.Classification)
	}
	// Output:
	// 11 contacts shown, restricted contacts withheld: 1
	// 0 contacts match "aegis" without approval
	// Riley Vance, Aegis Defence Systems (defence, restricted)
}

// Validation errors name the field and say what to fix; tools can show them
// as they are.
func ExampleValidationError() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "crm-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := crm.Open(ctx, filepath.Join(dir, "crm.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	_, err = store.CreateContact(ctx, crm.NewContact{Name: "Ann", Email: "x@"})
	var ve *crm.ValidationError
	if errors.As(err, &ve) {
		fmt.Println(ve.Field)
		fmt.Println(err)
	}
	_, err = store.GetDeal(ctx, 404)
	fmt.Println(errors.Is(err, crm.ErrNotFound), err)
	// Output:
	// email
	// email: "x@" is not a valid email address; give the bare address, like name@example.com
	// true deal 404: not found
}

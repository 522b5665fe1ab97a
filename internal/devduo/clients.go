package devduo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// maxClients bounds the registered clients (RFC 7591 registration is open
// to anyone who reaches the sign-in): registering one more forgets the
// oldest. Each MCP client registers once per server it talks to, so a
// person trying dev stays far below it.
const maxClients = 200

// clientsFile is the JSON document KeepClients reads and writes.
type clientsFile struct {
	Version int           `json:"version"`
	Clients []savedClient `json:"clients"`
}

type savedClient struct {
	ClientID     string         `json:"client_id"`
	ClientSecret string         `json:"client_secret,omitempty"`
	IssuedAt     int64          `json:"client_id_issued_at"`
	Metadata     clientMetadata `json:"metadata"`
}

// KeepClients keeps the registered clients in the file at path, so that a
// restarted sign-in still knows the client_id (and client secret) a client
// stored: it reads the clients registered before, if the file exists, and
// rewrites the file, atomically, at each registration from then on. The
// file holds client secrets: it is written with mode 0600, in a folder the
// caller keeps private. At most 200 clients are kept; registering one more
// forgets the oldest. Clients identified by a metadata document URL are
// not kept: they are fetched again. It fails, changing nothing, if the
// file cannot be read or holds anything but registrations this sign-in
// would have made; deleting the file starts afresh, and every client then
// registers again.
func (si *SignIn) KeepClients(path string) error {
	saved, err := readClients(path)
	if err != nil {
		return err
	}
	si.persistMu.Lock()
	defer si.persistMu.Unlock()
	si.mu.Lock()
	for _, c := range saved {
		si.clients[c.id] = c
	}
	si.trimClientsLocked()
	si.clientsPath = path
	si.mu.Unlock()
	return nil
}

// readClients reads and checks a file KeepClients wrote; a missing file is
// no clients.
func readClients(path string) ([]*client, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f clientsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: not a file of client registrations (%v)", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("%s: version %d, want 1", path, f.Version)
	}
	seen := make(map[string]bool, len(f.Clients))
	out := make([]*client, 0, len(f.Clients))
	for i, sc := range f.Clients {
		c := &client{id: sc.ClientID, secret: sc.ClientSecret, meta: sc.Metadata, issuedAt: time.Unix(sc.IssuedAt, 0)}
		switch {
		case c.id == "" || isDocumentURL(c.id) || seen[c.id]:
			return nil, fmt.Errorf("%s: client %d: missing, repeated or malformed client_id", path, i+1)
		case normalizeMetadata(&c.meta) != nil:
			return nil, fmt.Errorf("%s: client %s: invalid metadata: %s", path, c.id, normalizeMetadata(&c.meta).desc)
		case c.public() != (c.secret == ""):
			// A confidential client without a secret could never
			// authenticate; a public one with a secret is not one this
			// sign-in made.
			return nil, fmt.Errorf("%s: client %s: client_secret does not match token_endpoint_auth_method", path, c.id)
		}
		seen[c.id] = true
		out = append(out, c)
	}
	return out, nil
}

// addClient registers c, forgetting the oldest registration beyond
// maxClients, and saves the registrations if KeepClients was called. If
// they cannot be saved, c is not registered and the one forgotten to make
// room for it is back: a failed registration changes nothing.
func (si *SignIn) addClient(c *client) error {
	si.persistMu.Lock()
	defer si.persistMu.Unlock()
	si.mu.Lock()
	si.clients[c.id] = c
	trimmed := si.trimClientsLocked()
	path := si.clientsPath
	f := clientsFile{Version: 1, Clients: []savedClient{}}
	for _, r := range si.registeredLocked() {
		f.Clients = append(f.Clients, savedClient{ClientID: r.id, ClientSecret: r.secret, IssuedAt: r.issuedAt.Unix(), Metadata: r.meta})
	}
	si.mu.Unlock()
	if path == "" {
		return nil
	}
	if err := writeFileAtomic(path, f); err != nil {
		si.mu.Lock()
		delete(si.clients, c.id)
		for _, t := range trimmed {
			si.clients[t.id] = t
		}
		si.mu.Unlock()
		return err
	}
	return nil
}

// registeredLocked returns the registered clients (not those of metadata
// documents), oldest first.
func (si *SignIn) registeredLocked() []*client {
	var out []*client
	for _, c := range si.clients {
		if !isDocumentURL(c.id) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *client) int {
		if n := a.issuedAt.Compare(b.issuedAt); n != 0 {
			return n
		}
		return strings.Compare(a.id, b.id)
	})
	return out
}

// trimClientsLocked forgets the oldest registered clients beyond
// maxClients, and returns them.
func (si *SignIn) trimClientsLocked() []*client {
	reg := si.registeredLocked()
	trimmed := reg[:max(0, len(reg)-maxClients)]
	for _, c := range trimmed {
		delete(si.clients, c.id)
	}
	return trimmed
}

// writeFileAtomic writes v as JSON to path through a temporary file in the
// same folder, synced and renamed over path, so that a crash leaves the old
// file or the new one, never half of one. The file is readable by its
// owner only: it holds client secrets.
func writeFileAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

package main

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The image build copies the checkout (COPY . .) less what .dockerignore
// leaves out. A filled-in .env, a key or a token left beside the sources
// would otherwise end up in a build layer. These tests read the real
// checkout, untracked files included, as the build would.

// secretName matches file names that hold secrets by convention.
var secretName = regexp.MustCompile(`(^|/)(\.env(\..*)?|[^/]*\.env|[^/]*\.(pem|key|p12|pfx)|id_(rsa|ecdsa|ed25519))$`)

// secretContent matches what a secret looks like inside a file: a private
// key, a Duo secret key or client secret with a value, a client secret in
// JSON (crm-mcp dev's clients.json), a JWT.
var secretContent = regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----` +
	`|(?m)^\s*(export\s+)?(DUO_AUTH_SKEY|DUO_CLIENT_SECRET|DUO_INTROSPECTION_CLIENT_SECRET)=[^\s#.][^\s#]{7,}` +
	`|"client_secret"\s*:\s*"[^"]{8,}"` +
	`|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.`)

func TestBuildContextHoldsNoSecret(t *testing.T) {
	root := repoRoot(t)
	files, err := buildContext(root)
	require.NoError(t, err)
	require.Contains(t, files, "go.mod", "the build context must hold the module")
	require.Contains(t, files, "build/rootfs.sh")
	require.Contains(t, files, ".env.example", "the example configuration is documentation, not a secret")
	for _, f := range files {
		if f == ".env.example" {
			continue
		}
		require.False(t, secretName.MatchString(f), "the image build would copy %s, whose name says it holds a secret: add it to .dockerignore", f)
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		require.NoError(t, err)
		if loc := secretContent.FindIndex(b); loc != nil {
			t.Errorf("the image build would copy %s, which holds what looks like a secret at byte %d: move it out or add it to .dockerignore", f, loc[0])
		}
	}
}

// TestBuildContextLeavesOutSecrets plants secrets in a copy of the
// checkout's ignore rules and checks that the rules leave them out, and
// that the scan would have caught them otherwise.
func TestBuildContextLeavesOutSecrets(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	require.NoError(t, err)
	write := func(name, content string) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	}
	write(".dockerignore", string(ignore))
	write("main.go", "package main\n")
	write(".env.example", "DUO_AUTH_SKEY=\n")
	planted := map[string]string{
		".env":                   "DUO_AUTH_SKEY=abcdefghijklmnopqrstuvwxyz0123456789abcd\n",
		"deploy/prod.env":        "DUO_CLIENT_SECRET=abcdefghijklmnop\n",
		".env.local":             "DUO_AUTH_SKEY=abcdefghijklmnopqrstuvwxyz\n",
		"certs/tls.key":          "-----BEGIN EC PRIVATE KEY-----\n",
		"cmd/x/x_test.go":        "-----BEGIN PRIVATE KEY-----\n",
		"cmd/x/testdata/key.txt": "-----BEGIN PRIVATE KEY-----\n",
		// crm-mcp dev's data folder, wherever dev ran (--data-dir is
		// relative to the working directory): its registered clients.
		".crm-mcp-dev/clients.json":            `{"version":1,"clients":[{"client_id":"a","client_secret":"abcdefghijklmnop"}]}`,
		"examples/x/.crm-mcp-dev/clients.json": `{"version":1,"clients":[{"client_id":"a","client_secret":"abcdefghijklmnop"}]}`,
	}
	for name, content := range planted {
		write(name, content)
	}
	files, err := buildContext(dir)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{".dockerignore", ".env.example", "main.go"}, files)

	// Without the rules every planted file is in the context, and each is
	// caught by its name or its content.
	require.NoError(t, os.Remove(filepath.Join(dir, ".dockerignore")))
	files, err = buildContext(dir)
	require.NoError(t, err)
	for name := range planted {
		require.Contains(t, files, name)
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		require.NoError(t, err)
		require.True(t, secretName.MatchString(name) || secretContent.Match(b), "%s is not recognised as a secret", name)
	}
}

// TestGitIgnoresEnvFiles: a filled-in .env, or crm-mcp dev's data folder
// wherever dev ran, is never committed.
func TestGitIgnoresEnvFiles(t *testing.T) {
	root := repoRoot(t)
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is not on PATH")
	}
	for _, name := range []string{".env", "prod.env", ".env.local", "deploy/.env", ".crm-mcp-dev/clients.json", "cmd/crm-mcp/.crm-mcp-dev/clients.json"} {
		out, err := exec.Command("git", "-C", root, "check-ignore", "--no-index", "-q", name).CombinedOutput()
		require.NoError(t, err, "git does not ignore %s: add it to .gitignore (%s)", name, out)
	}
	err := exec.Command("git", "-C", root, "check-ignore", "--no-index", "-q", ".env.example").Run()
	require.Error(t, err, ".env.example documents the settings and must stay tracked")
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	return root
}

// buildContext lists the files (slash-separated, relative) that a build of
// dir would send, under dir's .dockerignore: Docker's rules, which are the
// last matching pattern wins, "!" re-includes, "**" spans directories, and
// a pattern matching a directory leaves out everything under it.
func buildContext(dir string) ([]string, error) {
	rules, err := readIgnore(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// Docker still walks an excluded directory when an exception
			// could re-include something under it; none of ours does
			// except at the root, so excluded directories are skipped.
			if excluded(rules, rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && !excluded(rules, rel) {
			files = append(files, rel)
		}
		return nil
	})
	return files, err
}

type ignoreRule struct {
	re     *regexp.Regexp
	negate bool
}

func readIgnore(name string) ([]ignoreRule, error) {
	b, err := os.ReadFile(name)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rules []ignoreRule
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if strings.HasPrefix(line, "!") {
			r.negate, line = true, strings.TrimSpace(line[1:])
		}
		line = strings.TrimPrefix(path.Clean("/"+line), "/")
		r.re = regexp.MustCompile("^" + patternRegexp(line) + "$")
		rules = append(rules, r)
	}
	return rules, sc.Err()
}

// patternRegexp translates one .dockerignore pattern (Go's filepath.Match
// syntax plus "**") into a regular expression over slash paths.
func patternRegexp(p string) string {
	var sb strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case strings.HasPrefix(p[i:], "**/"):
			sb.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(p[i:], "**"):
			sb.WriteString(".*")
			i++
		case c == '*':
			sb.WriteString("[^/]*")
		case c == '?':
			sb.WriteString("[^/]")
		default:
			sb.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return sb.String()
}

// excluded reports whether rel is left out: a pattern matches a path or
// any of its parent directories, and the last matching rule decides.
func excluded(rules []ignoreRule, rel string) bool {
	out := false
	for _, r := range rules {
		for p := rel; ; {
			if r.re.MatchString(p) {
				out = !r.negate
				break
			}
			i := strings.LastIndex(p, "/")
			if i < 0 {
				break
			}
			p = p[:i]
		}
	}
	return out
}

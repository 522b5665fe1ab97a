// Package pgtest starts a throwaway Postgres server for tests: a cluster
// made by initdb in a temporary directory, listening on 127.0.0.1 only, on a
// free port, with its unix socket inside that directory, and stopped when
// the test binary ends. Each test gets a database of its own.
//
// Use it from a package's tests:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		url := pgtest.NewDatabase(t) // postgres://...
//	}
//
// The cluster starts on the first NewDatabase, so a run that selects no
// Postgres test pays nothing. The tests fail, rather than skip, when the
// Postgres programs are missing: set CRM_MCP_SKIP_POSTGRES=1 to skip them
// on purpose.
//
// Run as root (as in CI), the server runs as the "postgres" user, since
// Postgres refuses to run as root.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// SkipVariable is the environment variable that, set to 1, skips every
// test that needs Postgres.
const SkipVariable = "CRM_MCP_SKIP_POSTGRES"

// startTimeout bounds initdb plus the server's start on a busy machine.
const startTimeout = 60 * time.Second

var (
	startOnce sync.Once
	cluster   *Cluster
	startErr  error
	dbSeq     atomic.Int64
)

// Main runs the tests and then stops the cluster if one was started. Call
// it from TestMain; it does not return.
func Main(m *testing.M) {
	code := m.Run()
	if cluster != nil {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
		}
	}
	os.Exit(code)
}

// NewDatabase returns the URL of a new, empty database on the shared
// cluster, dropped when t ends. It skips t if CRM_MCP_SKIP_POSTGRES=1 and
// fails t if the cluster cannot be started.
func NewDatabase(t testing.TB) string {
	t.Helper()
	c := Shared(t)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database: %v", err)
		}
	})
	return c.URL(name)
}

// Shared returns the cluster shared by the tests of this binary, starting
// it on first use. It skips t if CRM_MCP_SKIP_POSTGRES=1.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv(SkipVariable) == "1" {
		t.Skipf("%s=1: skipping a test that needs Postgres", SkipVariable)
	}
	startOnce.Do(func() { cluster, startErr = Start() })
	if startErr != nil {
		t.Fatalf("pgtest: %v", startErr)
	}
	return cluster
}

// Cluster is a running throwaway Postgres server.
type Cluster struct {
	dir  string // the temporary directory: data/, the socket, the log
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed when the server process has exited
	log  string
}

// Start runs initdb in a new temporary directory and starts a server on it.
// Stop it with Stop.
func Start() (*Cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, log: filepath.Join(dir, "server.log"), done: make(chan struct{})}
	if err := c.start(bin, cred); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(bin string, cred *syscall.Credential) error {
	if cred != nil {
		if err := os.Chown(c.dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	data := filepath.Join(c.dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}

	port, err := freePort()
	if err != nil {
		return err
	}
	c.port = port
	logf, err := os.Create(c.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	c.cmd = exec.Command(filepath.Join(bin, "postgres"),
		"-D", data,
		"-p", strconv.Itoa(port),
		"-h", "127.0.0.1", // loopback only
		"-k", c.dir, // the unix socket, out of /var/run/postgresql
		// Throwaway data: durability buys nothing and costs seconds.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200",
	)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// The server must not outlive a test binary that is killed.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("postgres exited at start:\n%s", c.logTail())
		case <-ctx.Done():
			c.cmd.Process.Kill()
			<-c.done
			return fmt.Errorf("postgres did not accept connections within %s: %v\n%s", startTimeout, err, c.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URL returns the URL of database name on the cluster.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, name)
}

// Stop shuts the server down (Postgres's fast shutdown) and removes its
// directory.
func (c *Cluster) Stop() error {
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	return os.RemoveAll(c.dir)
}

func (c *Cluster) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// binGlob is where Debian installs the server programs, off PATH.
var binGlob = "/usr/lib/postgresql/*/bin"

// findBin returns the directory of initdb and postgres: the newest
// binGlob, else PATH.
func findBin() (string, error) {
	dirs, _ := filepath.Glob(binGlob)
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("no Postgres server programs (initdb under /usr/lib/postgresql/*/bin or on PATH): " +
		"install them with `apt-get install postgresql`, or set " + SkipVariable + "=1 to skip the Postgres tests")
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// credential returns the postgres user's ids when running as root, since
// Postgres will not run as root; nil otherwise.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errors.New("running as root, and there is no postgres user to run the server as: install it with `apt-get install postgresql`")
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user has ids %q:%q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before the server does; the server then fails to start and says
// so.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/crm-mcp/crm-mcp/bench/load"
)

// startTimeout bounds how long a server may take to accept its first
// session.
const startTimeout = time.Minute

// server is one server under test, run as a child process.
type server struct {
	name   string
	url    string
	log    string
	tokens []string // one per session, for this server's audience
	// protocol is the MCP revision the load speaks to it; asked is the
	// one the run asked for.
	protocol, asked string
	stateless       bool // the go-sdk peer runs stateless
	cmd             *exec.Cmd
	done            chan struct{} // closed when the process has exited
	err             error         // how it exited, once done is closed
}

// label is the server's row in the table: what it is, then the revision
// it was spoken to in and, for the go-sdk peer, whether it ran stateless.
func (s *server) label() string {
	l := tableLabels[s.name] + ", " + s.protocol
	switch {
	case s.name == goSDK && s.stateless:
		l += ", stateless"
	case s.name == goSDK:
		l += ", sessions"
	case s.name == typeScript && s.protocol != s.asked:
		l += " (SDK v1 does not speak " + s.asked + ")"
	}
	return l
}

func (s *server) start(ctx context.Context) error {
	logf, err := os.Create(s.log)
	if err != nil {
		return err
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	setParentDeath(s.cmd)
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %v", s.name, err)
	}
	s.done = make(chan struct{})
	go func() {
		s.err = s.cmd.Wait()
		logf.Close()
		close(s.done)
	}()

	// Ready is when a real token is served: the server listens,
	// has the authorization server's keys, and serves MCP.
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		err := load.Ping(ctx, s.url, s.tokens[0], s.protocol)
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited before serving (%v):\n%s", s.name, s.err, tail(s.log))
		case <-ctx.Done():
			return fmt.Errorf("%s did not serve within %s: %v\n%s", s.name, startTimeout, err, tail(s.log))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// exited returns an error if the server is no longer running.
func (s *server) exited() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s exited during the run (%v):\n%s", s.name, s.err, tail(s.log))
	default:
		return nil
	}
}

// stop asks the server to shut down and waits for it, killing it after
// five seconds.
func (s *server) stop() {
	if s.done == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// tail is the end of a log file, for an error message.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

package govern

import (
	"bytes"
	"log/slog"
	"testing"
)

func TestSDKLoggerKeepsWarnings(t *testing.T) {
	var b bytes.Buffer
	l := SDKLogger(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Info("server session connected")
	l.With("k", "v").Debug("noise")
	l.Warn("kept")
	if got := b.String(); bytes.Contains([]byte(got), []byte("connected")) || bytes.Contains([]byte(got), []byte("noise")) || !bytes.Contains([]byte(got), []byte("msg=kept")) {
		t.Errorf("got %q, want only the warning", got)
	}
}

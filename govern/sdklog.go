package govern

import (
	"context"
	"log/slog"
)

// SDKLogger is l for go-sdk's own logging (mcp.ServerOptions.Logger,
// mcp.StreamableHTTPOptions.Logger): its warnings and errors only. A
// stateless server connects and disconnects a session for every request,
// and go-sdk logs both at Info: lines that say nothing the request log
// does not, which a caller could multiply at will.
func SDKLogger(l *slog.Logger) *slog.Logger {
	return slog.New(warnAndAbove{l.Handler()})
}

type warnAndAbove struct{ slog.Handler }

func (h warnAndAbove) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn && h.Handler.Enabled(ctx, level)
}

func (h warnAndAbove) WithAttrs(as []slog.Attr) slog.Handler {
	return warnAndAbove{h.Handler.WithAttrs(as)}
}

func (h warnAndAbove) WithGroup(name string) slog.Handler {
	return warnAndAbove{h.Handler.WithGroup(name)}
}

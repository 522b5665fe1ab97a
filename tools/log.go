package tools

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/crm-mcp/crm-mcp/govern"
)

// requestLog writes one line per request: method, tool, subject, status,
// duration. Never a header value, so never a token. The tool and subject
// are what the governor's gate learnt of the request. A request that no
// verified token carried (refused at the front door) is logged at Debug:
// anyone can send those as often as they like, and the audit trail
// already counts them per reason and source.
func requestLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, info := govern.WithRequest(r.Context())
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r.WithContext(ctx))
		level := slog.LevelInfo
		if info.Subject == "" && rec.status < http.StatusInternalServerError {
			level = slog.LevelDebug
		}
		log.LogAttrs(r.Context(), level, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.String("tool", info.Tool),
			slog.String("sub", info.Subject),
			slog.Int("status", rec.status),
			slog.Duration("duration", time.Since(start)),
		)
	})
}

// statusRecorder remembers the status code. Unwrap lets go-sdk's
// http.ResponseController reach Flush on the real writer (SSE).
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

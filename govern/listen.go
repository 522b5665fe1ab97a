package govern

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// EndListen is a receiving middleware for a governed server that has
// nothing to say on a stream of its own: a subscriptions/listen is
// acknowledged with nothing honoured and ends at once, as the 2026-07-28
// subscriptions pattern allows. go-sdk v1.8.0 would otherwise park it for
// as long as the client keeps the POST open, one held request each, from a
// token with no scope at all (issue 16). It clears what the request asked
// for before go-sdk sees it, so go-sdk acknowledges an empty subset and
// answers with the graceful-closure result, whatever capabilities the
// server advertises. The answer is the same for every caller and request.
func EndListen(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method == "subscriptions/listen" {
			if p, ok := req.GetParams().(*mcp.SubscriptionsListenParams); ok && p != nil && p.Notifications != nil {
				*p.Notifications = mcp.NotificationSubscriptions{}
			}
		}
		return next(ctx, method, req)
	}
}

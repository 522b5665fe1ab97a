package tools

import "github.com/modelcontextprotocol/go-sdk/mcp"

// Nothing the server sends outlives the request it answers.
//
// The server has a static tool list and no resources or prompts, so it has
// nothing to say on a stream of its own: no list ever changes, and nothing
// can be subscribed to. Yet go-sdk v1.8.0 advertises tools.listChanged
// whenever a tool is registered, and then parks every subscriptions/listen
// that asks for it (mcp/server.go subscriptionsListen waits on ctx.Done)
// for as long as the client keeps the POST open; the legacy GET stream
// likewise lasts as long as the client stays. Neither is counted by the
// session limits or the scope gate, so one token without a single scope
// could hold thousands of them (issue 16).
//
// So the server offers only what it honours, and closes what it cannot
// honour at once:
//
//   - capabilities says tools without listChanged, and no resources or
//     prompts, so no client has a reason to listen (go-sdk's client opens
//     subscriptions/listen only for a listChanged it was offered);
//   - a subscriptions/listen that arrives anyway is answered, as the
//     2026-07-28 subscriptions pattern asks, with
//     notifications/subscriptions/acknowledged naming the subset honoured
//     (none) and then the graceful-closure result, and the request ends.
//     govern.EndListen clears what the request asked for before go-sdk
//     sees it, so go-sdk acknowledges an empty subset and returns instead
//     of parking, whatever capabilities a later change might advertise;
//   - a GET (the 2025-03-26 to 2025-11-25 standalone SSE stream) gets 405
//     Method Not Allowed, which those revisions allow a server that offers
//     no such stream. go-sdk's client, the TypeScript SDK and mcp-remote
//     take 405 there to mean "no stream" and carry on; progress of a tool
//     call still flows on its own POST's response stream.

// capabilities is what the server honours: tools, whose list never
// changes. Logging is kept as go-sdk's default offers it.
func capabilities() *mcp.ServerCapabilities {
	return &mcp.ServerCapabilities{
		Tools:   &mcp.ToolCapabilities{ListChanged: false},
		Logging: &mcp.LoggingCapabilities{},
	}
}

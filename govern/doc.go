// Package govern owns what any governed MCP tool goes through, so that the
// CRM's own tools and the tools of servers the product did not write (the
// gateway) are governed by one pipeline, driven by a policy value declared
// beside each tool rather than by Go closures:
//
//   - the HTTP scope gate (Governor.Gate: 403 insufficient_scope before the
//     MCP handler, judged from the Mcp-Method/Mcp-Name headers of a
//     2026-07-28 request, or from a legacy request's body read as go-sdk
//     reads it) and the in-band scope check behind it;
//   - the explained refusal when signing in again cannot help
//     (RefusalMemory, shared by replicas);
//   - decoding the arguments once, checking them against the input schema;
//   - the step-up decision: reasons from the request alone, then the
//     classification of the one record the call names, then a Duo Push
//     (stepup.Guard) that says what the call will do, rendered from the
//     policy's templates, escaped and bounded; progress while it waits;
//   - an Event with a typed Outcome for every decision, recorded before it
//     is acted on (a Recorder that fails fails the call closed).
//
// A tool without a policy cannot be served: AddTool and AddRawTool are the
// only ways in, and a server a Governor governs lists and runs no other
// tool.
//
// Use:
//
//	g, err := govern.New(govern.Config{Guard: guard, Terms: terms, Recorder: rec})
//	govern.AddTool(g, server, &mcp.Tool{Name: "add"}, govern.Policy{
//		Scopes: []string{"calc.use"},
//		Action: "Add {{.a}} and {{.b}}",
//	}, func(ctx context.Context, c *govern.Call, in AddIn) (*mcp.CallToolResult, AddOut, error) { ... })
//	mux.Handle("/mcp", rs.Middleware(g.Gate(rs, mcp.NewStreamableHTTPHandler(...))))
package govern

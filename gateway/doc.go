// Package gateway puts Duo in front of MCP servers the product did not
// write: one MCP endpoint serving the tools of one or more upstream MCP
// servers (Streamable HTTP of either revision, with or without sessions,
// or stdio commands), each tool governed by a policy read from a YAML file
// (govern.Policy: a Duo-managed scope, when a Duo Push is needed, what it
// says), named "upstream.tool".
//
// Deny by default: only the tools the policy names are listed or
// callable. The client's token and headers never go upstream; the gateway
// sends only the headers its policy gives each upstream, with ${VAR}
// expanded from the environment. The upstream's input schema,
// annotations, structured content, isError, progress and cancellation
// pass through. An upstream that is down gives a tool error naming it,
// is dialled again with backoff, and leaves the others serving.
//
// Use:
//
//	pol, err := gateway.Load("policy.yaml", os.LookupEnv)
//	gw, err := gateway.New(ctx, gateway.Config{Policy: pol, Governor: g, Auth: rs})
//	defer gw.Close()
//	mux.Handle("/mcp", gw)
package gateway

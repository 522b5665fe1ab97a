// Command gosdk is the benchmark's go-sdk peer: the CRM server a user would
// build with the official Go SDK alone, as its documentation recommends. It
// serves the same seven tools as crm-mcp over in-memory data, on Streamable
// HTTP with sessions, or stateless with -stateless (go-sdk's only way to
// serve MCP 2026-07-28; it still serves initialize-based clients), behind go-sdk's auth.RequireBearerToken with a
// verifier that checks signature (keys from the authorization server's JWKS,
// cached and refreshed by jwx's jwk.Cache), issuer, audience (the resource
// URL, RFC 8707) and expiry on every request. Each tool checks the scope it
// needs. There is no step-up: the peer is the baseline crm-mcp is measured
// against, not a replacement for it.
//
//	gosdk -addr 127.0.0.1:9001 -issuer http://127.0.0.1:9000/oauth2/test \
//	      -jwks-url http://127.0.0.1:9000/oauth2/test/jwks
//
// It prints "gosdk peer ready: <MCP URL>" on stdout once it serves, and
// stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "listen `address`")
	issuer := flag.String("issuer", "", "the authorization server's issuer `URL` (required)")
	jwksURL := flag.String("jwks-url", "", "the authorization server's JWKS `URL` (required)")
	stateless := flag.Bool("stateless", false, "serve without sessions (StreamableHTTPOptions.Stateless): 2026-07-28 and earlier revisions alike")
	resource := flag.String("resource", "", "this server's resource `URL`, the audience tokens must carry (default http://ADDR/mcp)")
	flag.Parse()
	if *issuer == "" || *jwksURL == "" {
		fmt.Fprintln(os.Stderr, "gosdk: -issuer and -jwks-url are required")
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *issuer, *jwksURL, *resource, *stateless); err != nil {
		log.Fatalf("gosdk: %v", err)
	}
}

func run(ctx context.Context, addr, issuer, jwksURL, resource string, stateless bool) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if resource == "" {
		resource = "http://" + ln.Addr().String() + "/mcp"
	}
	verify, err := newVerifier(ctx, issuer, jwksURL, resource)
	if err != nil {
		return err
	}
	store, err := newStore()
	if err != nil {
		return err
	}
	server := mcp.NewServer(&mcp.Implementation{Name: "crm-gosdk-peer", Version: "bench"}, nil)
	addTools(server, store)

	metadataURL := strings.TrimSuffix(resource, "/mcp") + "/.well-known/oauth-protected-resource/mcp"
	bearer := auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{
		ResourceMetadataURL: metadataURL,
		ClockSkew:           30 * time.Second,
	})
	mux := http.NewServeMux()
	mux.Handle("/mcp", bearer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: stateless})))
	mux.Handle("/.well-known/oauth-protected-resource/mcp", auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
		Resource:             resource,
		AuthorizationServers: []string{issuer},
		ScopesSupported:      []string{scopeContactsRead, scopeContactsWrite, scopeDealsRead, scopeDealsWrite},
	}))

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Printf("gosdk peer ready: %s\n", resource)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// newVerifier returns a token verifier for go-sdk's RequireBearerToken: the
// signature is checked against the issuer's JWKS, which jwk.Cache fetches
// once here and refreshes in the background; then issuer, audience and
// expiry (jwt.Parse validates the time claims, with 30 s of leeway, and exp
// is required).
func newVerifier(ctx context.Context, issuer, jwksURL, resource string) (auth.TokenVerifier, error) {
	cache := jwk.NewCache(ctx)
	if err := cache.Register(jwksURL, jwk.WithMinRefreshInterval(15*time.Minute)); err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", jwksURL, err)
	}
	if _, err := cache.Refresh(ctx, jwksURL); err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", jwksURL, err)
	}
	keys := jwk.NewCachedSet(cache, jwksURL)
	return func(ctx context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		tok, err := jwt.ParseString(token,
			jwt.WithKeySet(keys),
			jwt.WithValidate(true),
			jwt.WithIssuer(issuer),
			jwt.WithAudience(resource),
			jwt.WithRequiredClaim(jwt.ExpirationKey),
			jwt.WithAcceptableSkew(30*time.Second),
		)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", auth.ErrInvalidToken, err)
		}
		var scopes []string
		if s, ok := tok.Get("scope"); ok {
			if str, ok := s.(string); ok {
				scopes = strings.Fields(str)
			}
		}
		return &auth.TokenInfo{Scopes: scopes, Expiration: tok.Expiration(), UserID: tok.Subject()}, nil
	}, nil
}

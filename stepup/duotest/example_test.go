package duotest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"

	duoapi "github.com/duosecurity/duo_api_golang"
	"github.com/duosecurity/duo_api_golang/authapi"

	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// client returns the real Duo client, trusting only the fake's certificate.
func client(srv *duotest.Server) *authapi.AuthApi {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(srv.CACertPEM())
	api := duoapi.NewDuoApi(srv.IKey(), srv.SKey(), srv.Host(), "example",
		duoapi.SetTransport(func(t *http.Transport) {
			t.TLSClientConfig = &tls.Config{RootCAs: pool}
		}))
	return authapi.NewAuthApi(*api)
}

func ExampleNewServer() {
	srv := duotest.NewServer()
	defer srv.Close()
	srv.Script("alice", duotest.Approve)
	duo := client(srv)

	pre, _ := duo.Preauth(authapi.PreauthUsername("alice"))
	fmt.Println("preauth:", pre.Response.Result, pre.Response.Devices[0].Device)

	info := url.Values{"tool": {"crm.deals.write"}, "deal": {"Acme & Sons"}}
	res, _ := duo.Auth("push",
		authapi.AuthUsername("alice"),
		authapi.AuthDevice("auto"),
		authapi.AuthPushinfo(info.Encode()))
	fmt.Println("auth:", res.Response.Result, res.Response.Status)

	p := srv.Pushes()[0]
	fmt.Println("shown to alice:", p.PushInfo.Get("deal"))
	// Output:
	// preauth: auth DPFZRS9FB0D46QFTM899
	// auth: allow allow
	// shown to alice: Acme & Sons
}

func ExampleDuo_Decide() {
	srv := duotest.NewServer()
	defer srv.Close()
	srv.Script("bob", duotest.Manual)
	duo := client(srv)

	res, _ := duo.Auth("push", authapi.AuthUsername("bob"), authapi.AuthDevice("auto"), authapi.AuthAsync())
	st, _ := duo.AuthStatus(res.Response.Txid)
	fmt.Println("before:", st.Response.Result, st.Response.Status)

	// A person on a web page, or the test itself, approves.
	p, _ := srv.WaitForPush(context.Background())
	_ = srv.Decide(p.TxID, true)

	st, _ = duo.AuthStatus(res.Response.Txid)
	fmt.Println("after:", st.Response.Result, st.Response.Status)
	// Output:
	// before: waiting pushed
	// after: allow allow
}

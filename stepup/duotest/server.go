package duotest

import (
	"crypto/rand"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
)

// Server is a Duo fake served over TLS on the loopback interface.
type Server struct {
	*Duo
	HTTP *httptest.Server
}

// NewServer starts a TLS server on 127.0.0.1 with a random integration key
// ("DI" and 18 upper-case letters or digits) and secret key (40 letters or
// digits). Call Close when done.
func NewServer() *Server {
	d := New("DI"+randomString(18, upperAlnum), randomString(40, alnum))
	s := &Server{Duo: d, HTTP: httptest.NewUnstartedServer(d)}
	s.HTTP.StartTLS()
	return s
}

// Host returns "127.0.0.1:PORT", the host argument duoapi.NewDuoApi wants.
func (s *Server) Host() string {
	return s.HTTP.Listener.Addr().String()
}

// CACertPEM returns the server's self-signed certificate as PEM, for a client
// to trust as its only root (a CA-file option, or RootCAs in a tls.Config).
func (s *Server) CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.HTTP.Certificate().Raw})
}

// Close answers any synchronous auth still waiting with 503 and shuts the
// server down.
func (s *Server) Close() {
	s.Duo.shutdown()
	s.HTTP.Close()
}

// Transport returns an http.RoundTripper that hands each request straight to
// the fake, with no network and no TLS. Requests must still be signed for the
// URL's host. It lets a client run inside a testing/synctest bubble, where a
// real server cannot: give duoapi's SetCustomHTTPClient an
// &http.Client{Transport: d.Transport()}.
func (d *Duo) Transport() http.RoundTripper {
	return roundTripper{d}
}

type roundTripper struct{ d *Duo }

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	// A client request names its host in URL; a server request in Host.
	sreq := req.Clone(req.Context())
	if sreq.Host == "" {
		sreq.Host = req.URL.Host
	}
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "127.0.0.1:1"
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	rt.d.ServeHTTP(rec, sreq)
	if req.Body != nil {
		req.Body.Close() // a RoundTripper must close the request body
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

const (
	upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	alnum      = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[randIntn(len(alphabet))]
	}
	return string(b)
}

// randIntn returns a uniform int in [0, n) from crypto/rand, rejecting the
// bytes that would bias it.
func randIntn(n int) int {
	limit := 256 - 256%n
	var b [1]byte
	for {
		_, _ = rand.Read(b[:]) // never fails, per crypto/rand
		if int(b[0]) < limit {
			return int(b[0]) % n
		}
	}
}

package main

import (
	"fmt"
	"net"
	"testing"
)

// benchConn is a connection that only has a source address: enough for
// the limiter, which never reads.
type benchConn struct {
	net.Conn
	addr net.Addr
}

func (c benchConn) Close() error         { return nil }
func (c benchConn) RemoteAddr() net.Addr { return c.addr }

// sourceConn is a benchConn from the i-th of many IPv4 sources.
func sourceConn(i int) net.Conn {
	return benchConn{addr: &net.TCPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Port: 40000}}
}

// BenchmarkConnLimiterAdmitAtBound is the cost of one accept of a
// connection flood once the bound is reached: each admit evicts the
// longest idle connection. The two bounds in one run show whether that
// cost grows with the bound (the review measured 768 and the derived
// maximum, 16384).
func BenchmarkConnLimiterAdmitAtBound(b *testing.B) {
	for _, bound := range []int{768, maxDerivedConnections} {
		b.Run(fmt.Sprintf("bound=%d", bound), func(b *testing.B) {
			lim := newConnLimiter(bound, bound, nil)
			for i := range bound {
				lim.admit(sourceConn(i))
			}
			i := bound
			for b.Loop() {
				if lim.admit(sourceConn(i)) == nil {
					b.Fatal("refused an idle flood's connection")
				}
				i++
			}
		})
	}
}

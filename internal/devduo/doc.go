// Package devduo is the local stand-in of Duo's user-facing side that
// crm-mcp dev runs: the page that plays Duo Mobile and answers pushes
// ([PushPage]).
//
// It is a product for people trying the server on one machine, not a test
// fake: the fakes the tests use are resourceserver/rstest and
// stepup/duotest, and this package builds on them. NEVER SERVE IT BEYOND
// LOOPBACK: it authenticates nobody, so whoever reaches it approves any
// push.
package devduo

// Package stepup asks a person to approve a sensitive tool call with a Duo
// Push (Duo Auth API v2) before the call runs. It is an extra factor on top
// of a valid OAuth access token, never a replacement for it: the user it
// asks comes from that token.
//
// Use:
//
//	terms, _ := stepup.NewTerms(stepup.DefaultSensitiveTerms)
//	guard, err := stepup.New(stepup.Config{IKey: ikey, SKey: skey, Host: host})
//	if err != nil { ... }
//	// in a tool handler, with the user from the verified token:
//	if term, ok := terms.Find(args); ok {
//		err := guard.Approve(ctx, stepup.Request{
//			User:    user,
//			Tool:    "list_contacts",
//			Reason:  fmt.Sprintf("query mentions %q", term),
//			Action:  `Search contacts for "defence"`,
//			Key:     stepup.CanonicalKey("list_contacts", args),
//		}, notifyProgress)
//		if err != nil {
//			return err // an *Error whose message says what to do
//		}
//	}
//
// # Flow of Approve
//
//  1. A live grant for the same User and Key (an approval less than
//     Config.GrantTTL old) approves at once, without Duo.
//  2. A user whose push was denied (or reported as fraud) less than
//     Config.DenyCooldown ago is refused at once, without a push.
//  3. A user has at most one approval in progress. Simultaneous calls with
//     the same Key share it and all get its result; a call with another Key
//     waits for it to end and then starts again from step 1.
//  4. At most Config.MaxPushes pushes per user in any ten minutes.
//  5. preauth: "auth" goes on; "allow" (a Duo bypass) approves without a
//     push and is logged as a warning; "deny" and "enroll" refuse.
//  6. auth sends the push asynchronously, with the tool, reason, summary,
//     client and server shown on the phone.
//  7. auth_status is polled until Duo decides or the deadline passes.
//  8. An approval becomes a grant; a denial starts the cooldown and
//     revokes every grant of the user, as a fraud report or a lock-out
//     does.
//
// # Failing closed
//
// Approve returns nil only when Duo said allow (or a grant it said allow to
// is still live). Every other end is an *Error: a denial, a timeout, Duo
// unreachable or answering something unexpected, bad credentials, rate
// limits, a cancelled request, an unknown result. A denial is never
// remembered as an approval. Messages say what happened and what to do and
// never hold the secret key.
//
// # Time
//
// One Approve call, queueing included, takes at most Config.Timeout, or less
// if its context says so. The Duo library has no context, so every HTTP
// request it makes is bound to the caller's deadline by a per-call transport
// (see duo.go), and Duo's 429 answers are handled here, honouring
// Retry-After, instead of by the library's minute of blind retries.
//
// # State
//
// Grants, cooldowns, push counts and the approvals in progress are kept in
// a [State]: by default in the Guard's memory, for one process. Replicas
// behind a load balancer share one State in Postgres (stepup/pgstate) and
// then act as one Guard: steps 1 to 4 and 8 hold across all of them, and
// identical calls arriving at different replicas share one push, which the
// replica that started it sends and polls while the others wait for its
// outcome. If that replica dies, its waiters fail closed by their deadline;
// no other replica sends a second push for the same call.
package stepup

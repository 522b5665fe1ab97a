package duotest

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// maxSkew is how far the Date header may be from the fake's clock. Duo's own
// fakes use 300 s; real Duo documents "a few minutes".
const maxSkew = 300 * time.Second

// canonicalize builds the v2 canonical request that duo_api_golang signs: Date,
// upper-case method, lower-case host (with port), path and the parameters, one
// per line. It does not modify params.
func canonicalize(date, method, host, path string, params url.Values) string {
	return strings.Join([]string{
		date,
		strings.ToUpper(method),
		strings.ToLower(host),
		path,
		canonParams(params),
	}, "\n")
}

// canonParams encodes params with keys sorted and, per key, values sorted,
// percent-encoded as RFC 3986 unreserved-only (space is %20, not +). This is
// url.Values.Encode with "+" turned into "%20": Encode escapes a literal "+"
// as %2B, so every "+" left in its output stands for a space.
func canonParams(params url.Values) string {
	sorted := make(url.Values, len(params))
	for k, vs := range params {
		vs = slices.Clone(vs)
		slices.Sort(vs)
		sorted[k] = vs
	}
	return strings.ReplaceAll(sorted.Encode(), "+", "%20")
}

// sign returns the lower-case hex HMAC-SHA512 of canon under skey.
func sign(skey, canon string) string {
	mac := hmac.New(sha512.New, []byte(skey))
	mac.Write([]byte(canon))
	return hex.EncodeToString(mac.Sum(nil))
}

// authorization returns the Authorization header value for a signature.
func authorization(ikey, sig string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(ikey+":"+sig))
}

// failure is a Duo error answer: the HTTP status and the FAIL envelope.
type failure struct {
	status  int
	code    int
	message string
	detail  string
}

// Authentication failures, with Duo's codes. Duo answers a missing or
// unreadable Date with 40104 (seen in the wild with localized weekday names);
// for a Date outside the window no distinct code is documented, so the fake
// answers 40103 as Duo's own fakes do.
var (
	errNoCredentials = &failure{http.StatusUnauthorized, 40101, "Missing request credentials", ""}
	errBadIKey       = &failure{http.StatusUnauthorized, 40102, "Invalid integration key in request credentials", ""}
	errBadSignature  = &failure{http.StatusUnauthorized, 40103, "Invalid signature in request credentials", ""}
	errNoDate        = &failure{http.StatusUnauthorized, 40104, "Missing request timestamp", ""}
	errStaleDate     = &failure{http.StatusUnauthorized, 40103, "Invalid signature in request credentials",
		"Date header is more than 300 seconds from the server's clock"}
)

// verify checks the request's credentials against ikey and skey at time now.
// It returns nil when the signature is valid.
func verify(r *http.Request, params url.Values, ikey, skey string, now time.Time) *failure {
	gotIKey, gotSig, ok := parseBasic(r.Header.Get("Authorization"))
	if !ok {
		return errNoCredentials
	}
	if !hmac.Equal([]byte(gotIKey), []byte(ikey)) {
		return errBadIKey
	}
	date := r.Header.Get("Date")
	when, ok := parseDate(date)
	if !ok {
		return errNoDate
	}
	if skew := now.Sub(when); skew > maxSkew || skew < -maxSkew {
		return errStaleDate
	}
	want := sign(skey, canonicalize(date, r.Method, r.Host, r.URL.Path, params))
	if !hmac.Equal([]byte(gotSig), []byte(want)) {
		return errBadSignature
	}
	return nil
}

// parseBasic splits "Basic base64(ikey:sig)". It is strict about the scheme
// only up to case, like net/http.
func parseBasic(h string) (ikey, sig string, ok bool) {
	scheme, enc, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return "", "", false
	}
	ikey, sig, ok = strings.Cut(string(raw), ":")
	return ikey, sig, ok && ikey != "" && sig != ""
}

// parseDate accepts RFC 1123 with a numeric zone (what duo_api_golang sends)
// or with a zone name such as GMT.
func parseDate(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC1123Z, time.RFC1123} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// Package bearer holds the bearer tokens of the detector's DetectorService
// and of the collector's admin API: the tokens-file format and a
// constant-time check of "authorization: Bearer TOKEN" (HTTP header or
// gRPC metadata).
package bearer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc/metadata"
)

// Parse reads a tokens file: one token per line, surrounding spaces
// trimmed; blank lines and lines starting with # are ignored; a token with
// spaces inside is an error naming its line.
func Parse(b []byte) ([]string, error) {
	var tokens []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if strings.ContainsAny(t, " \t") {
			return nil, fmt.Errorf("line %d: a token is one word (no spaces)", line)
		}
		tokens = append(tokens, t)
	}
	return tokens, sc.Err()
}

// Tokens is a set of accepted tokens. Only their SHA-256 is kept: comparing
// fixed-size digests in constant time hides both the tokens' contents and
// their lengths. A nil *Tokens accepts nothing.
type Tokens struct {
	sums [][sha256.Size]byte
}

// New returns the set of tokens.
func New(tokens []string) *Tokens {
	t := &Tokens{sums: make([][sha256.Size]byte, 0, len(tokens))}
	for _, s := range tokens {
		t.sums = append(t.sums, sha256.Sum256([]byte(s)))
	}
	return t
}

// Len is the number of tokens.
func (t *Tokens) Len() int {
	if t == nil {
		return 0
	}
	return len(t.sums)
}

// Check says whether token is one of the set, in time independent of which
// token (if any) matched.
func (t *Tokens) Check(token string) bool {
	if t == nil || token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	ok := 0
	for i := range t.sums {
		ok |= subtle.ConstantTimeCompare(sum[:], t.sums[i][:])
	}
	return ok == 1
}

// Authorized says whether r carries "Authorization: Bearer TOKEN" with a
// token of the set.
func (t *Tokens) Authorized(r *http.Request) bool {
	tok, ok := FromHeader(r.Header.Get("Authorization"))
	return ok && t.Check(tok)
}

// AuthorizedContext says whether the gRPC metadata of ctx carry
// "authorization: Bearer TOKEN" with a token of the set.
func (t *Tokens) AuthorizedContext(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := FromHeader(v); ok && t.Check(tok) {
			return true
		}
	}
	return false
}

// FromHeader extracts the token of an "Authorization: Bearer TOKEN" value;
// the scheme is case-insensitive (RFC 9110).
func FromHeader(h string) (string, bool) {
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

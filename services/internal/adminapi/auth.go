package adminapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Tokens is the set of admin tokens read from -adminapi.tokens-file. Every
// admin call (gRPC or HTTP) must carry "authorization: Bearer TOKEN" with
// one of them. It is immutable and safe for concurrent use.
type Tokens struct {
	// SHA-256 of each token: comparing fixed-size digests in constant time
	// hides both the tokens' contents and their lengths.
	sums [][sha256.Size]byte
}

// ErrNoTokens is returned for a tokens file without a single token: that
// would lock everybody out, which is never what was meant.
var ErrNoTokens = errors.New("no admin token")

// ParseTokens reads one token per line; blank lines and lines starting with
// # are ignored, surrounding spaces trimmed.
func ParseTokens(b []byte) (*Tokens, error) {
	t := &Tokens{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if strings.ContainsAny(s, " \t") {
			return nil, fmt.Errorf("line %d: a token cannot contain spaces", line)
		}
		t.sums = append(t.sums, sha256.Sum256([]byte(s)))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.sums) == 0 {
		return nil, ErrNoTokens
	}
	return t, nil
}

// LoadTokens reads a tokens file.
func LoadTokens(path string) (*Tokens, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read admin tokens file: %w", err)
	}
	t, err := ParseTokens(b)
	if err != nil {
		return nil, fmt.Errorf("admin tokens file %s: %w", path, err)
	}
	return t, nil
}

// Check says whether token is one of the admin tokens, in time independent
// of which token (if any) matched.
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

// Authorized says whether r carries "Authorization: Bearer TOKEN" with an
// admin token. The console's handlers use it too.
func (t *Tokens) Authorized(r *http.Request) bool {
	tok, ok := bearer(r.Header.Get("Authorization"))
	return ok && t.Check(tok)
}

// bearer extracts the token of an "Authorization: Bearer TOKEN" value; the
// scheme is case-insensitive (RFC 9110).
func bearer(h string) (string, bool) {
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

// Middleware serves next only to requests with an admin token; others get
// 401 with a JSON error body.
func (t *Tokens) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !t.Authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="causality-admin"`)
			writeError(w, status.New(codes.Unauthenticated, "missing or wrong admin token (Authorization: Bearer TOKEN)"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorizedContext checks the gRPC metadata of ctx.
func (t *Tokens) authorizedContext(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := bearer(v); ok && t.Check(tok) {
			return true
		}
	}
	return false
}

// UnaryInterceptor rejects, with UNAUTHENTICATED, the calls to the methods
// of services (full names such as "causality.admin.v1.AdminService") that
// lack an admin token; other services on the same server pass through.
// With no services given, every call is checked.
func (t *Tokens) UnaryInterceptor(services ...string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if guarded(info.FullMethod, services) && !t.authorizedContext(ctx) {
			return nil, status.Error(codes.Unauthenticated, "missing or wrong admin token (authorization: Bearer TOKEN)")
		}
		return handler(ctx, req)
	}
}

// guarded says whether fullMethod ("/pkg.Service/Method") belongs to one of
// services (all when services is empty).
func guarded(fullMethod string, services []string) bool {
	if len(services) == 0 {
		return true
	}
	svc, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	for _, s := range services {
		if s == svc {
			return true
		}
	}
	return false
}

package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"causality.dev/services/internal/bearer"
)

// Tokens is the set of admin tokens read from -adminapi.tokens-file. Every
// admin call (gRPC or HTTP) must carry "authorization: Bearer TOKEN" with
// one of them. It is immutable and safe for concurrent use.
type Tokens struct {
	set *bearer.Tokens
}

// ErrNoTokens is returned for a tokens file without a single token: that
// would lock everybody out, which is never what was meant.
var ErrNoTokens = errors.New("no admin token")

// ParseTokens reads one token per line (the bearer tokens-file format).
func ParseTokens(b []byte) (*Tokens, error) {
	tokens, err := bearer.Parse(b)
	if err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, ErrNoTokens
	}
	return &Tokens{set: bearer.New(tokens)}, nil
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

// Check says whether token is one of the admin tokens, in constant time.
func (t *Tokens) Check(token string) bool { return t != nil && t.set.Check(token) }

// Authorized says whether r carries "Authorization: Bearer TOKEN" with an
// admin token. The console's handlers use it too.
func (t *Tokens) Authorized(r *http.Request) bool { return t != nil && t.set.Authorized(r) }

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

// UnaryInterceptor rejects, with UNAUTHENTICATED, the calls to the methods
// of services (full names such as "causality.admin.v1.AdminService") that
// lack an admin token; other services on the same server pass through.
// With no services given, every call is checked.
func (t *Tokens) UnaryInterceptor(services ...string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if guarded(info.FullMethod, services) && (t == nil || !t.set.AuthorizedContext(ctx)) {
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

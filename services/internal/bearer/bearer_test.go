package bearer

import (
	"context"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestParse(t *testing.T) {
	got, err := Parse([]byte("# tokens\n\n  first-token  \nsecond\n"))
	if err != nil || len(got) != 2 || got[0] != "first-token" || got[1] != "second" {
		t.Fatalf("Parse = %q, %v", got, err)
	}
	if _, err := Parse([]byte("ok\ntwo words\n")); err == nil || err.Error() != "line 2: a token is one word (no spaces)" {
		t.Errorf("a token with a space: err = %v", err)
	}
	if got, err := Parse(nil); err != nil || len(got) != 0 {
		t.Errorf("empty file: %q, %v", got, err)
	}
}

func TestCheck(t *testing.T) {
	tok := New([]string{"first-token", "second"})
	for token, want := range map[string]bool{"first-token": true, "second": true, "": false, "first-toke": false, "first-token ": false, "other": false} {
		if got := tok.Check(token); got != want {
			t.Errorf("Check(%q) = %v, want %v", token, got, want)
		}
	}
	var none *Tokens
	if none.Check("second") || none.Len() != 0 {
		t.Error("a nil set accepted a token")
	}
}

func TestAuthorized(t *testing.T) {
	tok := New([]string{"s3cret-token"})
	for h, want := range map[string]bool{
		"Bearer s3cret-token": true, "bearer s3cret-token": true, "BEARER  s3cret-token ": true,
		"Bearer wrong": false, "s3cret-token": false, "Basic s3cret-token": false, "Bearer ": false, "": false,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if h != "" {
			r.Header.Set("Authorization", h)
		}
		if got := tok.Authorized(r); got != want {
			t.Errorf("HTTP %q: %v, want %v", h, got, want)
		}
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", h))
		if got := tok.AuthorizedContext(ctx); got != want {
			t.Errorf("gRPC %q: %v, want %v", h, got, want)
		}
	}
	if tok.AuthorizedContext(context.Background()) {
		t.Error("no metadata was authorized")
	}
}

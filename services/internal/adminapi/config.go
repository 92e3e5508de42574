package adminapi

import (
	"errors"
	"flag"
	"log/slog"
	"net/http"

	"google.golang.org/grpc"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
)

// Config configures the admin API. It is off unless TokensFile is set:
// there is no anonymous admin access.
type Config struct {
	TokensFile string
	RulesFile  string
	AppsFile   string

	// KeysFile is the collector's -ingest.keys-file, which the admin API
	// edits; set by the wiring, not a flag of its own.
	KeysFile string
}

// RegisterFlags registers the -adminapi.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.TokensFile, "adminapi.tokens-file", "", "file of admin tokens, one per line (# comments); enables the AdminService on the gRPC and HTTP ports")
	fs.StringVar(&c.RulesFile, "adminapi.rules-file", "", "rules and webhooks file (protobuf JSON RuleSet) the admin API writes and the detector's -rules.file reads")
	fs.StringVar(&c.AppsFile, "adminapi.apps-file", "", "apps file (protobuf JSON) the admin API writes")
}

// Enabled says whether the admin API is to be served.
func (c *Config) Enabled() bool { return c.TokensFile != "" }

// Validate reports the first missing or contradictory setting.
func (c *Config) Validate() error {
	if !c.Enabled() {
		if c.RulesFile != "" || c.AppsFile != "" {
			return errors.New("-adminapi.rules-file and -adminapi.apps-file need -adminapi.tokens-file (the admin API is off without tokens)")
		}
		return nil
	}
	switch {
	case c.KeysFile == "":
		return errors.New("-adminapi.tokens-file needs -ingest.keys-file: the admin API manages ingest keys in that file")
	case c.RulesFile == "":
		return errors.New("-adminapi.tokens-file needs -adminapi.rules-file (where rules and webhooks are stored)")
	case c.AppsFile == "":
		return errors.New("-adminapi.tokens-file needs -adminapi.apps-file (where apps are stored)")
	case c.RulesFile == c.AppsFile || c.RulesFile == c.KeysFile || c.AppsFile == c.KeysFile:
		return errors.New("-adminapi.rules-file, -adminapi.apps-file and -ingest.keys-file must be three different files")
	}
	return nil
}

// API is the admin API ready to be mounted on a gRPC server and an HTTP mux.
type API struct {
	Tokens  *Tokens
	Store   *Store
	Service *Service
}

// New loads the tokens and builds the service over the files of cfg.
func New(cfg Config, rules Rules, logger *slog.Logger) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("admin API not enabled (-adminapi.tokens-file)")
	}
	t, err := LoadTokens(cfg.TokensFile)
	if err != nil {
		return nil, err
	}
	st := NewStore(cfg.AppsFile, cfg.KeysFile, cfg.RulesFile)
	// Fail at start, not at the first call, on a file that does not parse.
	if _, err := st.Apps(); err != nil {
		return nil, err
	}
	if _, err := st.RuleSet(); err != nil {
		return nil, err
	}
	if _, err := st.IngestKeys(""); err != nil {
		return nil, err
	}
	return &API{Tokens: t, Store: st, Service: NewService(st, rules, logger)}, nil
}

// ServiceName is the full name of the AdminService.
var ServiceName = adminv1.AdminService_ServiceDesc.ServiceName

// GRPCOption is the interceptor that checks the admin token on the
// AdminService's calls (and leaves the other services alone).
func (a *API) GRPCOption() grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(a.Tokens.UnaryInterceptor(ServiceName))
}

// RegisterGRPC adds the AdminService to gs.
func (a *API) RegisterGRPC(gs *grpc.Server) { Register(gs, a.Service) }

// Handler serves the HTTP JSON calls, for mux.Handle(HTTPPrefix, h).
func (a *API) Handler() http.Handler { return NewHTTPHandler(a.Service, a.Tokens) }

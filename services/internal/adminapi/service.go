// Package adminapi is the collector's AdminService: apps, ingest keys,
// rules and webhooks, served over gRPC and as protobuf JSON over HTTP, to
// callers holding an admin token. Requests flow in through the service
// (service.go, http.go) into a Store of files (store.go) that the
// collectors (keys) and the detector (rules) re-read when they change.
package adminapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Rules is what the admin API needs of package rules (the collector wires
// in rules.Validate and rules.Explain; tests a fake).
type Rules struct {
	// Validate says what is wrong with a rule on its own, or nil.
	Validate func(*adminv1.Rule) error
	// Explain says whether the rule's condition matches ev, and why.
	Explain func(r *adminv1.Rule, ev *eventv1.Event) (matched bool, lines []string, err error)
	// ValidateSet checks a whole RuleSet as the detector will load it
	// (optional): every write of the rules file must pass it.
	ValidateSet func(*adminv1.RuleSet) error
}

// Service implements adminv1.AdminServiceServer over a Store. It is the
// edge where store errors become gRPC codes.
type Service struct {
	adminv1.UnimplementedAdminServiceServer
	store  *Store
	rules  Rules
	logger *slog.Logger
}

// NewService returns the AdminService over store; rules validates the
// rules stored (both funcs are required).
func NewService(store *Store, rules Rules, logger *slog.Logger) *Service {
	if rules.Validate == nil || rules.Explain == nil {
		panic("adminapi: NewService without rules.Validate and rules.Explain")
	}
	store.validateRule, store.validateSet = rules.Validate, rules.ValidateSet
	return &Service{store: store, rules: rules, logger: logger}
}

var _ adminv1.AdminServiceServer = (*Service)(nil)

// toStatus maps a store error to a gRPC status error.
func (s *Service) toStatus(op string, err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, ErrInUse):
		code = codes.FailedPrecondition
	}
	if code == codes.Internal {
		s.logger.Error("admin call failed", "op", op, "err", err)
	} else {
		s.logger.Info("admin call refused", "op", op, "code", code.String(), "err", err)
	}
	return status.Error(code, err.Error())
}

func (s *Service) CreateApp(_ context.Context, req *adminv1.CreateAppRequest) (*adminv1.CreateAppResponse, error) {
	app, err := s.store.CreateApp(req.GetApp())
	if err != nil {
		return nil, s.toStatus("CreateApp", err)
	}
	s.logger.Info("app created", "app", app.GetId())
	return &adminv1.CreateAppResponse{App: app}, nil
}

func (s *Service) ListApps(context.Context, *adminv1.ListAppsRequest) (*adminv1.ListAppsResponse, error) {
	apps, err := s.store.Apps()
	if err != nil {
		return nil, s.toStatus("ListApps", err)
	}
	return &adminv1.ListAppsResponse{Apps: apps}, nil
}

func (s *Service) CreateIngestKey(_ context.Context, req *adminv1.CreateIngestKeyRequest) (*adminv1.CreateIngestKeyResponse, error) {
	key, secret, err := s.store.CreateIngestKey(req.GetAppId(), req.GetName())
	if err != nil {
		return nil, s.toStatus("CreateIngestKey", err)
	}
	s.logger.Info("ingest key created", "app", key.GetAppId(), "key", key.GetId())
	return &adminv1.CreateIngestKeyResponse{Key: key, Secret: secret}, nil
}

func (s *Service) ListIngestKeys(_ context.Context, req *adminv1.ListIngestKeysRequest) (*adminv1.ListIngestKeysResponse, error) {
	keys, err := s.store.IngestKeys(req.GetAppId())
	if err != nil {
		return nil, s.toStatus("ListIngestKeys", err)
	}
	return &adminv1.ListIngestKeysResponse{Keys: keys}, nil
}

func (s *Service) RevokeIngestKey(_ context.Context, req *adminv1.RevokeIngestKeyRequest) (*adminv1.RevokeIngestKeyResponse, error) {
	key, err := s.store.RevokeIngestKey(req.GetId())
	if err != nil {
		return nil, s.toStatus("RevokeIngestKey", err)
	}
	s.logger.Info("ingest key revoked", "app", key.GetAppId(), "key", key.GetId())
	return &adminv1.RevokeIngestKeyResponse{Key: key}, nil
}

func (s *Service) CreateRule(_ context.Context, req *adminv1.CreateRuleRequest) (*adminv1.CreateRuleResponse, error) {
	r, err := s.store.CreateRule(req.GetRule())
	if err != nil {
		return nil, s.toStatus("CreateRule", err)
	}
	s.logger.Info("rule created", "rule", r.GetId(), "app", r.GetAppId())
	return &adminv1.CreateRuleResponse{Rule: r}, nil
}

func (s *Service) UpdateRule(_ context.Context, req *adminv1.UpdateRuleRequest) (*adminv1.UpdateRuleResponse, error) {
	r, err := s.store.UpdateRule(req.GetRule())
	if err != nil {
		return nil, s.toStatus("UpdateRule", err)
	}
	s.logger.Info("rule updated", "rule", r.GetId(), "app", r.GetAppId())
	return &adminv1.UpdateRuleResponse{Rule: r}, nil
}

func (s *Service) ListRules(_ context.Context, req *adminv1.ListRulesRequest) (*adminv1.ListRulesResponse, error) {
	rs, err := s.store.Rules(req.GetAppId())
	if err != nil {
		return nil, s.toStatus("ListRules", err)
	}
	return &adminv1.ListRulesResponse{Rules: rs}, nil
}

func (s *Service) DeleteRule(_ context.Context, req *adminv1.DeleteRuleRequest) (*adminv1.DeleteRuleResponse, error) {
	if err := s.store.DeleteRule(req.GetId()); err != nil {
		return nil, s.toStatus("DeleteRule", err)
	}
	s.logger.Info("rule deleted", "rule", req.GetId())
	return &adminv1.DeleteRuleResponse{}, nil
}

// TestRule evaluates the rule's condition on the event; nothing is stored.
func (s *Service) TestRule(_ context.Context, req *adminv1.TestRuleRequest) (*adminv1.TestRuleResponse, error) {
	switch {
	case req.GetRule() == nil:
		return nil, status.Error(codes.InvalidArgument, "rule is required")
	case req.GetEvent() == nil:
		return nil, status.Error(codes.InvalidArgument, "event is required")
	}
	if err := s.rules.Validate(req.GetRule()); err != nil {
		return nil, status.Error(codes.InvalidArgument, "rule: "+err.Error())
	}
	matched, lines, err := s.rules.Explain(req.GetRule(), req.GetEvent())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &adminv1.TestRuleResponse{Matched: matched, Explanation: lines}, nil
}

func (s *Service) CreateWebhook(_ context.Context, req *adminv1.CreateWebhookRequest) (*adminv1.CreateWebhookResponse, error) {
	w, err := s.store.CreateWebhook(req.GetWebhook())
	if err != nil {
		return nil, s.toStatus("CreateWebhook", err)
	}
	s.logger.Info("webhook created", "webhook", w.GetId(), "url", w.GetUrl())
	return &adminv1.CreateWebhookResponse{Webhook: w}, nil
}

func (s *Service) ListWebhooks(context.Context, *adminv1.ListWebhooksRequest) (*adminv1.ListWebhooksResponse, error) {
	ws, err := s.store.Webhooks()
	if err != nil {
		return nil, s.toStatus("ListWebhooks", err)
	}
	return &adminv1.ListWebhooksResponse{Webhooks: ws}, nil
}

func (s *Service) DeleteWebhook(_ context.Context, req *adminv1.DeleteWebhookRequest) (*adminv1.DeleteWebhookResponse, error) {
	if err := s.store.DeleteWebhook(req.GetId()); err != nil {
		return nil, s.toStatus("DeleteWebhook", err)
	}
	s.logger.Info("webhook deleted", "webhook", req.GetId())
	return &adminv1.DeleteWebhookResponse{}, nil
}

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/adminapi"
)

func init() {
	commands["admin"] = command{"manage apps, ingest keys, rules and webhooks through a collector's AdminService", runAdmin}
}

const adminUsage = `usage: causality admin [-addr HOST:PORT] [-token-file FILE] [-o json|table] RESOURCE VERB ...

  apps     list
           create ID [-name NAME]
  keys     list [-app APP]
           create -app APP [-name NAME]      (prints the key once)
           revoke ID
  rules    list [-app APP]
           create -f rule.json               (protobuf JSON of a Rule; - reads stdin)
           update [ID] -f rule.json
           delete ID
           test -f rule.json -event event.json
  webhooks list
           create -url URL [-description TEXT] [-secret-file FILE]   (prints the secret once)
           delete ID

The admin token comes from -token-file, else $CAUSALITY_ADMIN_TOKEN, else
.causality/dev/admin-token (written by 'causality dev'). The address is the
collector's gRPC port (-ingest.grpc-addr), also from $CAUSALITY_ADMINAPI_ADDR.
`

// errUsage marks a command line that cannot be run; the usage is printed.
var errUsage = errors.New("bad usage (causality admin -h)")

// adminCLI holds the flags every admin verb accepts.
type adminCLI struct {
	addr      string
	tokenFile string
	output    string
	useTLS    bool
	timeout   time.Duration

	stdout, stderr io.Writer
	client         adminv1.AdminServiceClient
}

func (c *adminCLI) register(fs *flag.FlagSet) {
	addr := "127.0.0.1:7071"
	if v := os.Getenv("CAUSALITY_ADMINAPI_ADDR"); v != "" {
		addr = v
	}
	fs.StringVar(&c.addr, "addr", addr, "the collector's gRPC address")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the admin token (first non-comment line)")
	fs.StringVar(&c.output, "o", "json", "output: json or table")
	fs.BoolVar(&c.useTLS, "tls", false, "connect with TLS (system roots)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "time limit of the call")
}

// runAdmin is `causality admin`: one AdminService call per run.
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := &adminCLI{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, adminUsage); fs.PrintDefaults() }
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) < 2 {
		fs.Usage()
		return fmt.Errorf("%w: give a resource and a verb, e.g. `causality admin apps list`", errUsage)
	}
	verb, ok := adminVerbs[rest[0]+" "+rest[1]]
	if !ok {
		fs.Usage()
		return fmt.Errorf("%w: unknown command %q", errUsage, rest[0]+" "+rest[1])
	}
	// The verb's own flags, and the common ones again: they may come last.
	given := map[string]string{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = f.Value.String() })
	vfs := flag.NewFlagSet("admin "+rest[0]+" "+rest[1], flag.ContinueOnError)
	vfs.SetOutput(stderr)
	c.register(vfs) // resets the common flags to their defaults: set them again
	for name, v := range given {
		_ = vfs.Set(name, v)
	}
	run := verb(vfs)
	pos, err := parseInterleaved(vfs, rest[2:])
	if err != nil {
		return err
	}
	if c.output != "json" && c.output != "table" {
		return fmt.Errorf("%w: -o %q: json or table", errUsage, c.output)
	}
	token, err := adminToken(c.tokenFile)
	if err != nil {
		return err
	}
	creds := insecure.NewCredentials()
	if c.useTLS {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	cc, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("-addr %s: %w", c.addr, err)
	}
	defer cc.Close()
	c.client = adminv1.NewAdminServiceClient(cc)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	return c.callError(run(ctx, c, pos))
}

// parseInterleaved parses flags and positional arguments in any order.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// adminToken reads the token from file, $CAUSALITY_ADMIN_TOKEN or the dev
// stack's file.
func adminToken(file string) (string, error) {
	if file == "" {
		if t := strings.TrimSpace(os.Getenv("CAUSALITY_ADMIN_TOKEN")); t != "" {
			return t, nil
		}
		file = filepath.Join(devDir, "admin-token")
		if _, err := os.Stat(file); err != nil {
			return "", fmt.Errorf("%w: no admin token: give -token-file FILE or set CAUSALITY_ADMIN_TOKEN", errUsage)
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return t, nil
		}
	}
	return "", fmt.Errorf("admin token file %s holds no token", file)
}

// callError turns a gRPC status into a one-line error.
func (c *adminCLI) callError(err error) error {
	st, ok := status.FromError(err)
	if err == nil || !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("cannot reach the AdminService at %s (-addr): %s", c.addr, st.Message())
	case codes.Unimplemented:
		return fmt.Errorf("the collector at %s does not serve the AdminService (start it with -adminapi.tokens-file)", c.addr)
	}
	return fmt.Errorf("%s: %s", adminapi.CodeName(st.Code()), st.Message())
}

type adminRun func(ctx context.Context, c *adminCLI, pos []string) error

// adminVerbs maps "resource verb" to a function that registers the verb's
// flags and returns how to run it.
var adminVerbs = map[string]func(fs *flag.FlagSet) adminRun{
	"apps list": func(*flag.FlagSet) adminRun {
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			if err := noArgs(pos); err != nil {
				return err
			}
			res, err := c.client.ListApps(ctx, &adminv1.ListAppsRequest{})
			if err != nil {
				return err
			}
			return c.print(res, []string{"ID", "NAME", "CREATED"}, func(row func(...string)) {
				for _, a := range res.GetApps() {
					row(a.GetId(), a.GetName(), ts(a.GetCreateTime().AsTime(), a.GetCreateTime() != nil))
				}
			})
		}
	},
	"apps create": func(fs *flag.FlagSet) adminRun {
		name := fs.String("name", "", "display name")
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			id, err := oneArg(pos, "ID")
			if err != nil {
				return err
			}
			res, err := c.client.CreateApp(ctx, &adminv1.CreateAppRequest{App: &adminv1.App{Id: id, Name: *name}})
			if err != nil {
				return err
			}
			return c.print(res, []string{"ID", "NAME"}, func(row func(...string)) { row(res.GetApp().GetId(), res.GetApp().GetName()) })
		}
	},
	"keys list": func(fs *flag.FlagSet) adminRun {
		app := fs.String("app", "", "only this app's keys")
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			if err := noArgs(pos); err != nil {
				return err
			}
			res, err := c.client.ListIngestKeys(ctx, &adminv1.ListIngestKeysRequest{AppId: *app})
			if err != nil {
				return err
			}
			return c.print(res, []string{"ID", "APP", "NAME", "REVOKED", "CREATED"}, func(row func(...string)) {
				for _, k := range res.GetKeys() {
					row(k.GetId(), k.GetAppId(), k.GetName(), fmt.Sprint(k.GetRevoked()), ts(k.GetCreateTime().AsTime(), k.GetCreateTime() != nil))
				}
			})
		}
	},
	"keys create": func(fs *flag.FlagSet) adminRun {
		app := fs.String("app", "", "app the key is for (required)")
		name := fs.String("name", "", "label, e.g. ios-prod")
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			if err := noArgs(pos); err != nil {
				return err
			}
			if *app == "" {
				return fmt.Errorf("%w: keys create needs -app APP", errUsage)
			}
			res, err := c.client.CreateIngestKey(ctx, &adminv1.CreateIngestKeyRequest{AppId: *app, Name: *name})
			if err != nil {
				return err
			}
			return c.print(res, []string{"ID", "APP", "KEY (shown once)"}, func(row func(...string)) {
				row(res.GetKey().GetId(), res.GetKey().GetAppId(), res.GetSecret())
			})
		}
	},
	"keys revoke": func(*flag.FlagSet) adminRun {
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			id, err := oneArg(pos, "ID")
			if err != nil {
				return err
			}
			res, err := c.client.RevokeIngestKey(ctx, &adminv1.RevokeIngestKeyRequest{Id: id})
			if err != nil {
				return err
			}
			return c.print(res, []string{"ID", "APP", "REVOKED"}, func(row func(...string)) {
				row(res.GetKey().GetId(), res.GetKey().GetAppId(), ts(res.GetKey().GetRevokeTime().AsTime(), true))
			})
		}
	},
	"rules list": func(fs *flag.FlagSet) adminRun {
		app := fs.String("app", "", "only this app's rules")
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			if err := noArgs(pos); err != nil {
				return err
			}
			res, err := c.client.ListRules(ctx, &adminv1.ListRulesRequest{AppId: *app})
			if err != nil {
				return err
			}
			return c.print(res, []string{"ID", "NAME", "APP", "ENABLED", "ACTIONS"}, func(row func(...string)) {
				for _, r := range res.GetRules() {
					row(r.GetId(), r.GetName(), orAll(r.GetAppId()), fmt.Sprint(!r.GetDisabled()), fmt.Sprint(len(r.GetActions())))
				}
			})
		}
	},
	"rules create": func(fs *flag.FlagSet) adminRun {
		file := fs.String("f", "", "the rule: protobuf JSON of causality.admin.v1.Rule (- = stdin)")
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			if err := noArgs(pos); err != nil {
				return err
			}
			r := &adminv1.Rule{}
			if err := readProtoJSON(*file, "-f", r); err != nil {
				return err
			}
			res, err := c.client.CreateRule(ctx, &adminv1.CreateRuleRequest{Rule: r})
			if err != nil {
				return err
			}
			return c.printRule(res, res.GetRule())
		}
	},
	"rules update": func(fs *flag.FlagSet) adminRun {
		file := fs.String("f", "", "the rule: protobuf JSON of causality.admin.v1.Rule (- = stdin)")
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			if len(pos) > 1 {
				return fmt.Errorf("%w: unexpected arguments %q", errUsage, pos[1:])
			}
			r := &adminv1.Rule{}
			if err := readProtoJSON(*file, "-f", r); err != nil {
				return err
			}
			if len(pos) == 1 {
				r.Id = pos[0]
			}
			if r.GetId() == "" {
				return fmt.Errorf("%w: rules update needs the rule id: as an argument or in the file", errUsage)
			}
			res, err := c.client.UpdateRule(ctx, &adminv1.UpdateRuleRequest{Rule: r})
			if err != nil {
				return err
			}
			return c.printRule(res, res.GetRule())
		}
	},
	"rules delete": func(*flag.FlagSet) adminRun {
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			id, err := oneArg(pos, "ID")
			if err != nil {
				return err
			}
			res, err := c.client.DeleteRule(ctx, &adminv1.DeleteRuleRequest{Id: id})
			if err != nil {
				return err
			}
			return c.print(res, []string{"DELETED"}, func(row func(...string)) { row(id) })
		}
	},
	"rules test": func(fs *flag.FlagSet) adminRun {
		file := fs.String("f", "", "the rule: protobuf JSON of causality.admin.v1.Rule (- = stdin)")
		event := fs.String("event", "", "a sample event: protobuf JSON of causality.event.v1.Event")
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			if err := noArgs(pos); err != nil {
				return err
			}
			r, ev := &adminv1.Rule{}, &eventv1.Event{}
			if err := readProtoJSON(*file, "-f", r); err != nil {
				return err
			}
			if *file == "-" && *event == "-" {
				return fmt.Errorf("%w: -f and -event cannot both read stdin", errUsage)
			}
			if err := readProtoJSON(*event, "-event", ev); err != nil {
				return err
			}
			res, err := c.client.TestRule(ctx, &adminv1.TestRuleRequest{Rule: r, Event: ev})
			if err != nil {
				return err
			}
			return c.print(res, []string{"MATCHED", "WHY"}, func(row func(...string)) {
				row(fmt.Sprint(res.GetMatched()), "")
				for _, l := range res.GetExplanation() {
					row("", l)
				}
			})
		}
	},
	"webhooks list": func(*flag.FlagSet) adminRun {
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			if err := noArgs(pos); err != nil {
				return err
			}
			res, err := c.client.ListWebhooks(ctx, &adminv1.ListWebhooksRequest{})
			if err != nil {
				return err
			}
			return c.print(res, []string{"ID", "URL", "DESCRIPTION"}, func(row func(...string)) {
				for _, w := range res.GetWebhooks() {
					row(w.GetId(), w.GetUrl(), w.GetDescription())
				}
			})
		}
	},
	"webhooks create": func(fs *flag.FlagSet) adminRun {
		u := fs.String("url", "", "where rule firings are POSTed (required)")
		desc := fs.String("description", "", "what it is for")
		secretFile := fs.String("secret-file", "", "file holding the signing secret (default: one is generated and printed once)")
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			if err := noArgs(pos); err != nil {
				return err
			}
			if *u == "" {
				return fmt.Errorf("%w: webhooks create needs -url URL", errUsage)
			}
			w := &adminv1.Webhook{Url: *u, Description: *desc}
			if *secretFile != "" {
				b, err := os.ReadFile(*secretFile)
				if err != nil {
					return fmt.Errorf("-secret-file: %w", err)
				}
				w.Secret = strings.TrimSpace(string(b))
			}
			res, err := c.client.CreateWebhook(ctx, &adminv1.CreateWebhookRequest{Webhook: w})
			if err != nil {
				return err
			}
			return c.print(res, []string{"ID", "URL", "SECRET (shown once)"}, func(row func(...string)) {
				row(res.GetWebhook().GetId(), res.GetWebhook().GetUrl(), res.GetWebhook().GetSecret())
			})
		}
	},
	"webhooks delete": func(*flag.FlagSet) adminRun {
		return func(ctx context.Context, c *adminCLI, pos []string) error {
			id, err := oneArg(pos, "ID")
			if err != nil {
				return err
			}
			res, err := c.client.DeleteWebhook(ctx, &adminv1.DeleteWebhookRequest{Id: id})
			if err != nil {
				return err
			}
			return c.print(res, []string{"DELETED"}, func(row func(...string)) { row(id) })
		}
	},
}

func noArgs(pos []string) error {
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, pos)
	}
	return nil
}

func oneArg(pos []string, what string) (string, error) {
	if len(pos) != 1 || pos[0] == "" {
		return "", fmt.Errorf("%w: give exactly one %s", errUsage, what)
	}
	return pos[0], nil
}

func orAll(app string) string {
	if app == "" {
		return "(all)"
	}
	return app
}

func ts(t time.Time, ok bool) string {
	if !ok {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// readProtoJSON reads protobuf JSON from file (- = stdin) into m.
func readProtoJSON(file, flagName string, m proto.Message) error {
	if file == "" {
		return fmt.Errorf("%w: %s FILE is required", errUsage, flagName)
	}
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, adminapi.MaxBody))
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", flagName, err)
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%s %s: not a protobuf JSON %s: %w", flagName, file, m.ProtoReflect().Descriptor().Name(), err)
	}
	return nil
}

// print writes res as protobuf JSON, or with -o table as rows under head.
func (c *adminCLI) print(res proto.Message, head []string, rows func(row func(...string))) error {
	if c.output == "table" {
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		rows(func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) })
		return tw.Flush()
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitDefaultValues: true}.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.stdout, string(b))
	return err
}

func (c *adminCLI) printRule(res proto.Message, r *adminv1.Rule) error {
	return c.print(res, []string{"ID", "NAME", "APP"}, func(row func(...string)) { row(r.GetId(), r.GetName(), orAll(r.GetAppId())) })
}

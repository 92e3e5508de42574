package main

// Tests of deploy/: the compose file, the Kubernetes manifests, the
// Prometheus scrape configs and the Dockerfile use only flags the binary has,
// with values it parses, and only ports its listen flags give (defaults or
// the values set). They read the files; no Docker engine or cluster is
// needed (there is none here).

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const deployDir = "../../../deploy"

// commandFlags is the flag set of `causality CMD`, built the way the command
// builds it: its config type's register for the services, else the flags
// its -h lists (commands without a config type, such as keys).
func commandFlags(cmd string) (*flag.FlagSet, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	switch cmd {
	case "collector":
		var c collectorConfig
		c.register(fs)
	case "sink":
		var c sinkConfig
		c.register(fs)
	case "detector":
		var c detectorConfig
		c.register(fs)
	default:
		if _, ok := commands[cmd]; !ok {
			return nil, fmt.Errorf("no command %q", cmd)
		}
		var help bytes.Buffer
		_ = run(context.Background(), []string{cmd, "-h"}, &bytes.Buffer{}, &help)
		for _, line := range strings.Split(help.String(), "\n") {
			rest, ok := strings.CutPrefix(line, "  -")
			if !ok {
				continue
			}
			name, typ, _ := strings.Cut(strings.ReplaceAll(rest, "\t", " "), " ")
			if name == "version" {
				continue // parse adds it; not a setting
			}
			if strings.TrimSpace(typ) == "" {
				fs.Bool(name, false, "")
			} else {
				fs.String(name, "", "")
			}
		}
	}
	return fs, nil
}

// listenPorts are the ports `causality CMD` listens on with fs's values:
// its *addr flags whose default is ":PORT" (all interfaces), and which of
// them is the admin port.
func listenPorts(fs *flag.FlagSet) (ports map[int]string, admin int) {
	ports = map[int]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.HasSuffix(f.Name, "addr") || !strings.HasPrefix(f.DefValue, ":") {
			return
		}
		_, p, err := net.SplitHostPort(f.Value.String())
		n, perr := strconv.Atoi(p)
		if err != nil || perr != nil || n == 0 {
			return
		}
		ports[n] = f.Name
		if f.Name == "admin.addr" {
			admin = n
		}
	})
	return ports, admin
}

// portRef is a port a manifest expects a process to listen on.
type portRef struct {
	what  string
	port  int
	admin bool // must be -admin.addr's port (probes, scrape targets)
}

// use is one place in deploy/ that runs the image: `causality ARGS...` with
// an environment, and the ports the manifest expects of it.
type use struct {
	where string
	args  []string // args[0] is the subcommand
	env   map[string]string
	ports []portRef
}

// resolved is what a use gives once its flags are parsed.
type resolved struct {
	fs    *flag.FlagSet
	ports map[int]string
	admin int
}

// problems collects what is wrong, as sentences naming the file.
type problems []string

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// checkUse parses u's environment and arguments the way parse does:
// CAUSALITY_* variables first, then the command line; every variable must
// name a flag of the subcommand and every value must parse.
func checkUse(u use, p *problems) *resolved {
	if len(u.args) == 0 {
		p.addf("%s: no causality subcommand", u.where)
		return nil
	}
	cmd := u.args[0]
	fs, err := commandFlags(cmd)
	if err != nil {
		p.addf("%s: %v", u.where, err)
		return nil
	}
	byEnv := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { byEnv[envName(f.Name)] = f.Name })
	for _, k := range slices.Sorted(maps.Keys(u.env)) {
		if !strings.HasPrefix(k, "CAUSALITY_") {
			continue
		}
		name, ok := byEnv[k]
		if !ok {
			p.addf("%s: %s names no flag of `causality %s`", u.where, k, cmd)
			continue
		}
		if v := u.env[k]; !strings.Contains(v, "${") { // compose interpolation: value unknown here
			if err := fs.Set(name, v); err != nil {
				p.addf("%s: %s=%q: %v", u.where, k, v, err)
			}
		}
	}
	if err := fs.Parse(u.args[1:]); err != nil {
		p.addf("%s: `causality %s`: %v", u.where, strings.Join(u.args, " "), err)
		return nil
	}
	if fs.NArg() > 0 {
		p.addf("%s: unexpected arguments %q", u.where, fs.Args())
	}
	r := &resolved{fs: fs}
	r.ports, r.admin = listenPorts(fs)
	for _, ref := range u.ports {
		switch {
		case ref.admin && ref.port != r.admin:
			p.addf("%s: %s is port %d, but `causality %s` serves /metrics, /healthz and /readyz on %d (-admin.addr)", u.where, ref.what, ref.port, cmd, r.admin)
		case !ref.admin && r.ports[ref.port] == "":
			p.addf("%s: %s is port %d, on which `causality %s` does not listen (it listens on %v)", u.where, ref.what, ref.port, cmd, sortedPorts(r.ports))
		}
	}
	return r
}

func sortedPorts(m map[int]string) []int { return slices.Sorted(maps.Keys(m)) }

// strs reads a YAML string or list of strings (compose allows both).
func strs(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

// envOf reads a compose environment: a map or a list of K=V.
func envOf(v any) map[string]string {
	env := map[string]string{}
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			env[k] = fmt.Sprint(e)
		}
	case []any:
		for _, e := range v {
			k, val, _ := strings.Cut(fmt.Sprint(e), "=")
			env[k] = val
		}
	}
	return env
}

type composeService struct {
	Image       string         `yaml:"image"`
	Build       map[string]any `yaml:"build"`
	Entrypoint  any            `yaml:"entrypoint"`
	Command     any            `yaml:"command"`
	Environment any            `yaml:"environment"`
	Ports       []any          `yaml:"ports"`
	Volumes     []any          `yaml:"volumes"`
}

type promConfig struct {
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// checkCompose checks a compose file and the Prometheus config that scrapes
// its services; dir is where the compose file is (for its bind mounts).
func checkCompose(composeYAML, promYAML []byte, dir string, p *problems) (uses int) {
	var c struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(composeYAML, &c); err != nil {
		p.addf("compose: %v", err)
		return 0
	}
	var prom promConfig
	if err := yaml.Unmarshal(promYAML, &prom); err != nil {
		p.addf("prometheus.yml: %v", err)
	}
	scraped := map[string][]portRef{} // compose service -> scrape targets
	jobs := map[string]string{}       // compose service -> job
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port, err := net.SplitHostPort(target)
				n, perr := strconv.Atoi(port)
				if err != nil || perr != nil {
					p.addf("prometheus.yml job %s: target %q is not host:port", sc.JobName, target)
					continue
				}
				if host == "localhost" {
					continue
				}
				if _, ok := c.Services[host]; !ok {
					p.addf("prometheus.yml job %s: target %q is no compose service", sc.JobName, target)
					continue
				}
				scraped[host] = append(scraped[host], portRef{what: "scrape target " + target, port: n, admin: true})
				jobs[host] = sc.JobName
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		s := c.Services[name]
		where := "compose service " + name
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(fmt.Sprint(v), ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					p.addf("%s: bind mount %s: %v", where, src, err)
				}
			}
		}
		ours := strings.HasPrefix(s.Image, "causality:") || fmt.Sprint(s.Build["dockerfile"]) == "deploy/Dockerfile"
		if !ours {
			if len(scraped[name]) > 0 {
				p.addf("%s: scraped by Prometheus but does not run causality", where)
			}
			continue
		}
		args := strs(s.Command)
		if ep := strs(s.Entrypoint); len(ep) > 0 {
			if ep[0] != "/causality" {
				p.addf("%s: entrypoint %q is not /causality", where, ep[0])
				continue
			}
			args = append(ep[1:], args...)
		}
		u := use{where: where, args: args, env: envOf(s.Environment), ports: scraped[name]}
		for _, port := range s.Ports {
			spec := fmt.Sprint(port)
			if m, ok := port.(map[string]any); ok {
				spec = fmt.Sprint(m["target"])
			}
			parts := strings.Split(strings.TrimSuffix(spec, "/tcp"), ":")
			n, err := strconv.Atoi(parts[len(parts)-1])
			if err != nil {
				p.addf("%s: port %q: %v", where, spec, err)
				continue
			}
			u.ports = append(u.ports, portRef{what: "published container port", port: n})
		}
		if len(u.args) > 0 && len(scraped[name]) > 0 && jobs[name] != "causality-"+u.args[0] {
			p.addf("%s: scraped as job %q; the alert rules and dashboards expect causality-%s", where, jobs[name], u.args[0])
		}
		if checkUse(u, p) != nil {
			uses++
		}
	}
	return uses
}

// k8s objects are read as generic maps: the manifests use few fields.
type obj = map[string]any

func get(o any, path ...string) any {
	for _, k := range path {
		m, ok := o.(map[string]any)
		if !ok {
			return nil
		}
		o = m[k]
	}
	return o
}

func getList(o any, path ...string) []any { l, _ := get(o, path...).([]any); return l }
func getStr(o any, path ...string) string { s, _ := get(o, path...).(string); return s }
func getInt(o any, path ...string) (int, bool) {
	n, ok := get(o, path...).(int)
	return n, ok
}

// workload is a pod template of a Deployment or StatefulSet.
type workload struct {
	name   string
	labels map[string]any
	pods   obj
}

// checkK8s checks the manifests (file name -> content): the causality
// containers' args, env and envFrom ConfigMaps against the flags, their
// ports, probes and shutdown budget, the Services' target ports, and what
// HPAs and PDBs point at.
func checkK8s(files map[string][]byte, p *problems) (uses int) {
	var objs []struct {
		file string
		o    obj
	}
	for _, f := range slices.Sorted(maps.Keys(files)) {
		dec := yaml.NewDecoder(bytes.NewReader(files[f]))
		for {
			var o obj
			err := dec.Decode(&o)
			if err != nil {
				if err.Error() != "EOF" {
					p.addf("%s: %v", f, err)
				}
				break
			}
			if o != nil {
				objs = append(objs, struct {
					file string
					o    obj
				}{f, o})
			}
		}
	}
	configMaps := map[string]map[string]string{}
	var workloads []workload
	for _, x := range objs {
		switch getStr(x.o, "kind") {
		case "ConfigMap":
			data := map[string]string{}
			for k, v := range get(x.o, "data").(map[string]any) {
				data[k] = fmt.Sprint(v)
			}
			configMaps[getStr(x.o, "metadata", "name")] = data
		case "Deployment", "StatefulSet", "DaemonSet":
			labels, _ := get(x.o, "spec", "template", "metadata", "labels").(map[string]any)
			pods, _ := get(x.o, "spec", "template", "spec").(map[string]any)
			workloads = append(workloads, workload{getStr(x.o, "metadata", "name"), labels, pods})
			sel, _ := get(x.o, "spec", "selector", "matchLabels").(map[string]any)
			if len(sel) == 0 || !matches(sel, labels) {
				p.addf("%s %s: spec.selector does not match the pod template's labels", x.file, getStr(x.o, "metadata", "name"))
			}
		}
	}
	for _, x := range objs {
		kind, name := getStr(x.o, "kind"), getStr(x.o, "metadata", "name")
		where := fmt.Sprintf("%s %s %s", x.file, kind, name)
		switch kind {
		case "Deployment", "StatefulSet", "DaemonSet":
			pods, _ := get(x.o, "spec", "template", "spec").(map[string]any)
			for _, ci := range getList(pods, "containers") {
				c, _ := ci.(obj)
				if !strings.Contains(getStr(c, "image"), "causality") {
					continue
				}
				if checkContainer(where+" container "+getStr(c, "name"), pods, c, configMaps, p) {
					uses++
				}
			}
		case "Service":
			sel, _ := get(x.o, "spec", "selector").(map[string]any)
			var targets []workload
			for _, w := range workloads {
				if len(sel) > 0 && matches(sel, w.labels) {
					targets = append(targets, w)
				}
			}
			if len(targets) == 0 {
				p.addf("%s: its selector matches no pod template", where)
				continue
			}
			for _, sp := range getList(x.o, "spec", "ports") {
				target := get(sp, "targetPort")
				if target == nil {
					target = get(sp, "port")
				}
				for _, w := range targets {
					if _, ok := containerPort(w.pods, target); !ok {
						p.addf("%s: targetPort %v is no container port of %s", where, target, w.name)
					}
				}
			}
		case "HorizontalPodAutoscaler":
			if !slices.ContainsFunc(workloads, func(w workload) bool { return w.name == getStr(x.o, "spec", "scaleTargetRef", "name") }) {
				p.addf("%s: scaleTargetRef %q is no workload here", where, getStr(x.o, "spec", "scaleTargetRef", "name"))
			}
		case "PodDisruptionBudget":
			sel, _ := get(x.o, "spec", "selector", "matchLabels").(map[string]any)
			if !slices.ContainsFunc(workloads, func(w workload) bool { return len(sel) > 0 && matches(sel, w.labels) }) {
				p.addf("%s: its selector matches no pod template", where)
			}
		}
	}
	return uses
}

func matches(sel, labels map[string]any) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// containerPort resolves a port number or name against the pod's containers.
func containerPort(pods obj, port any) (int, bool) {
	for _, c := range getList(pods, "containers") {
		for _, cp := range getList(c, "ports") {
			n, _ := getInt(cp, "containerPort")
			if port == n || (getStr(cp, "name") != "" && port == getStr(cp, "name")) {
				return n, true
			}
		}
	}
	return 0, false
}

// checkContainer checks one container running the image; it reports
// whether its flags parsed.
func checkContainer(where string, pods, c obj, configMaps map[string]map[string]string, p *problems) bool {
	args := strs(get(c, "args"))
	if cmd := strs(get(c, "command")); len(cmd) > 0 {
		args = append(cmd[1:], args...)
	}
	u := use{where: where, args: args, env: map[string]string{}}
	for _, ef := range getList(c, "envFrom") {
		name := getStr(ef, "configMapRef", "name")
		if name == "" {
			continue
		}
		data, ok := configMaps[name]
		if !ok {
			p.addf("%s: envFrom ConfigMap %s is not in the manifests", where, name)
		}
		for k, v := range data {
			u.env[k] = v
		}
	}
	for _, e := range getList(c, "env") {
		v := getStr(e, "value")
		if get(e, "valueFrom") != nil {
			v = "${from a secret or field}" // name checked, value unknown
		}
		u.env[getStr(e, "name")] = v
	}
	named := map[string]int{}
	for _, cp := range getList(c, "ports") {
		n, _ := getInt(cp, "containerPort")
		named[getStr(cp, "name")] = n
		u.ports = append(u.ports, portRef{what: "containerPort " + getStr(cp, "name"), port: n, admin: getStr(cp, "name") == "admin"})
	}
	if _, ok := named["admin"]; !ok {
		p.addf("%s: no container port named admin (deploy/prometheus/prometheus-k8s.yml scrapes it)", where)
	}
	for _, probe := range []string{"readinessProbe", "livenessProbe", "startupProbe"} {
		hg := get(c, probe, "httpGet")
		if hg == nil {
			if probe != "startupProbe" {
				p.addf("%s: no %s on the admin port", where, probe)
			}
			continue
		}
		port := get(hg, "port")
		n, isNum := port.(int)
		if !isNum {
			var ok bool
			if n, ok = named[fmt.Sprint(port)]; !ok {
				p.addf("%s: %s port %v is no container port", where, probe, port)
				continue
			}
		}
		u.ports = append(u.ports, portRef{what: probe + " port", port: n, admin: true})
		want := map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}[probe]
		if path := getStr(hg, "path"); path != want {
			p.addf("%s: %s on %s, want %s", where, probe, path, want)
		}
	}
	r := checkUse(u, p)
	if r == nil {
		return false
	}
	// The kubelet kills at terminationGracePeriodSeconds, counted from the
	// preStop hook: the service must have stopped by itself before.
	grace, ok := getInt(pods, "terminationGracePeriodSeconds")
	if !ok {
		grace = 30
	}
	stop := r.fs.Lookup("shutdown-timeout")
	if stop == nil {
		p.addf("%s: `causality %s` has no -shutdown-timeout", where, args[0])
		return true
	}
	d, _ := time.ParseDuration(stop.Value.String())
	sleep, _ := getInt(c, "lifecycle", "preStop", "sleep", "seconds")
	if d <= 0 || time.Duration(grace)*time.Second < d+time.Duration(sleep)*time.Second+5*time.Second {
		p.addf("%s: terminationGracePeriodSeconds %d leaves no margin over preStop %ds + -shutdown-timeout %s", where, grace, sleep, d)
	}
	return true
}

var exposeRE = regexp.MustCompile(`(?m)^EXPOSE\s+(.+)$`)

// TestDeployManifests checks the files of deploy/ as they are.
func TestDeployManifests(t *testing.T) {
	read := func(rel string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(deployDir, rel))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var p problems
	if n := checkCompose(read("compose/compose.yaml"), read("prometheus/prometheus.yml"), filepath.Join(deployDir, "compose"), &p); n < 4 {
		t.Errorf("compose: %d causality services checked, want collector, sink, detector and keys", n)
	}

	k8s := map[string][]byte{}
	entries, err := os.ReadDir(filepath.Join(deployDir, "k8s"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") && e.Name() != "kustomization.yaml" {
			k8s[e.Name()] = read("k8s/" + e.Name())
		}
	}
	if n := checkK8s(k8s, &p); n != 3 {
		t.Errorf("k8s: %d causality containers checked, want collector, sink and detector", n)
	}
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(read("k8s/kustomization.yaml"), &kust); err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Sorted(slices.Values(kust.Resources)), slices.Sorted(maps.Keys(k8s)); !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %v, want every manifest of deploy/k8s: %v", got, want)
	}

	// The image exposes exactly the services' default listen ports.
	want := map[int]bool{}
	for _, cmd := range []string{"collector", "sink", "detector"} {
		fs, _ := commandFlags(cmd)
		ports, _ := listenPorts(fs)
		for port := range ports {
			want[port] = true
		}
	}
	m := exposeRE.FindSubmatch(read("Dockerfile"))
	if m == nil {
		t.Fatal("deploy/Dockerfile has no EXPOSE")
	}
	exposed := map[int]bool{}
	for _, f := range strings.Fields(string(m[1])) {
		n, err := strconv.Atoi(strings.TrimSuffix(f, "/tcp"))
		if err != nil {
			t.Fatalf("EXPOSE %s: %v", f, err)
		}
		exposed[n] = true
	}
	if fmt.Sprint(sortedBoolPorts(exposed)) != fmt.Sprint(sortedBoolPorts(want)) {
		t.Errorf("deploy/Dockerfile EXPOSE %v, want the default listen ports %v", sortedBoolPorts(exposed), sortedBoolPorts(want))
	}
	for _, s := range p {
		t.Error(s)
	}
}

func sortedBoolPorts(m map[int]bool) []int { return slices.Sorted(maps.Keys(m)) }

// TestDeployManifestsCatchMistakes: the checks above fail on manifests that
// name a flag the binary lacks, a value it cannot parse, or a port it does
// not listen on.
func TestDeployManifestsCatchMistakes(t *testing.T) {
	const prom = `
scrape_configs:
  - job_name: causality-collector
    static_configs:
      - targets: ["collector:9100"]
`
	composeCases := []struct {
		name, compose, prom, want string
	}{
		{"good", `
services:
  collector:
    image: causality:dev
    command: [collector, -ingest.keys-file=/k, -kafka.brokers=kafka:9092]
    environment:
      CAUSALITY_INGEST_DRAIN_TIMEOUT: 15s
    ports: ["7070:7070", "8080"]
`, prom, ""},
		{"unknown flag", `
services:
  collector:
    image: causality:dev
    command: [collector, -ingest.keys-file=/k, -ingest.no-such-flag=1]
`, prom, "flag provided but not defined: -ingest.no-such-flag"},
		{"flag of another command", `
services:
  sink:
    image: causality:dev
    command: [sink, -ingest.keys-file=/k]
`, "", "flag provided but not defined: -ingest.keys-file"},
		{"unknown environment variable", `
services:
  collector:
    image: causality:dev
    command: [collector]
    environment: [CAUSALITY_INGEST_NO_SUCH_FLAG=1]
`, prom, "CAUSALITY_INGEST_NO_SUCH_FLAG names no flag of `causality collector`"},
		{"value that does not parse", `
services:
  collector:
    image: causality:dev
    command: [collector]
    environment:
      CAUSALITY_INGEST_DRAIN_TIMEOUT: "20"
`, prom, "CAUSALITY_INGEST_DRAIN_TIMEOUT=\"20\""},
		{"published port nobody listens on", `
services:
  collector:
    image: causality:dev
    command: [collector]
    ports: ["7777:7777"]
`, prom, "port 7777, on which `causality collector` does not listen"},
		{"port moved by a flag", `
services:
  collector:
    image: causality:dev
    command: [collector, -ingest.tcp-addr=:7000]
    ports: ["7070:7070"]
`, prom, "port 7070, on which"},
		{"scrape target off the admin port", `
services:
  collector:
    image: causality:dev
    command: [collector, -admin.addr=:9200]
`, prom, "scrape target collector:9100 is port 9100"},
		{"scrape job the rules do not know", `
services:
  collector:
    image: causality:dev
    command: [collector]
`, strings.Replace(prom, "job_name: causality-collector", "job_name: collector", 1), `scraped as job "collector"`},
		{"unknown subcommand", `
services:
  collector:
    image: causality:dev
    command: [colector]
`, "", `no command "colector"`},
	}
	for _, tc := range composeCases {
		t.Run("compose/"+tc.name, func(t *testing.T) {
			var p problems
			checkCompose([]byte(tc.compose), []byte(tc.prom), t.TempDir(), &p)
			checkProblems(t, p, tc.want)
		})
	}

	const deployment = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: c}
spec:
  selector: {matchLabels: {app: c}}
  template:
    metadata: {labels: {app: c}}
    spec:
      terminationGracePeriodSeconds: 60
      containers:
        - name: collector
          image: causality
          args: [collector, -ingest.keys-file=/k, -shutdown-timeout=40s]
          envFrom: [{configMapRef: {name: c}}]
          ports:
            - {name: tcp, containerPort: 7070}
            - {name: admin, containerPort: 9100}
          readinessProbe: {httpGet: {path: /readyz, port: admin}}
          livenessProbe: {httpGet: {path: /healthz, port: 9100}}
          lifecycle: {preStop: {sleep: {seconds: 10}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data: {CAUSALITY_KAFKA_BROKERS: "kafka:9092"}
---
apiVersion: v1
kind: Service
metadata: {name: c}
spec:
  selector: {app: c}
  ports: [{name: tcp, port: 7070, targetPort: tcp}]
`
	k8sCases := []struct{ name, old, new, want string }{
		{"good", "", "", ""},
		{"unknown flag in args", "-shutdown-timeout=40s", "-shutdown-timeout=40s, -ingest.nope=1", "flag provided but not defined: -ingest.nope"},
		{"ConfigMap variable of another service", "CAUSALITY_KAFKA_BROKERS", "CAUSALITY_CLICKHOUSE_ADDR", "CAUSALITY_CLICKHOUSE_ADDR names no flag of `causality collector`"},
		{"missing ConfigMap", "configMapRef: {name: c}", "configMapRef: {name: d}", "envFrom ConfigMap d is not in the manifests"},
		{"containerPort nobody listens on", "containerPort: 7070", "containerPort: 7072", "containerPort tcp is port 7072"},
		{"probe off the admin port", "port: 9100}", "port: 7070}", "livenessProbe port is port 7070"},
		{"probe on a port name that does not exist", "port: admin}", "port: metrics}", "readinessProbe port metrics is no container port"},
		{"liveness on /readyz", "path: /healthz", "path: /readyz", "livenessProbe on /readyz, want /healthz"},
		{"Service targetPort typo", "targetPort: tcp", "targetPort: tpc", "targetPort tpc is no container port"},
		{"grace period shorter than the shutdown", "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 45", "leaves no margin"},
		{"admin port moved but probes not", "-shutdown-timeout=40s", "-shutdown-timeout=40s, -admin.addr=:9200", "is port 9100, but `causality collector` serves"},
	}
	for _, tc := range k8sCases {
		t.Run("k8s/"+tc.name, func(t *testing.T) {
			doc := deployment
			if tc.old != "" {
				if !strings.Contains(doc, tc.old) {
					t.Fatalf("bad case: %q not in the snippet", tc.old)
				}
				doc = strings.Replace(doc, tc.old, tc.new, 1)
			}
			var p problems
			if n := checkK8s(map[string][]byte{"x.yaml": []byte(doc)}, &p); n != 1 && tc.want == "" {
				t.Errorf("%d containers checked, want 1", n)
			}
			checkProblems(t, p, tc.want)
		})
	}
}

// checkProblems wants no problem (want == "") or one mentioning want.
func checkProblems(t *testing.T, p problems, want string) {
	t.Helper()
	if want == "" {
		for _, s := range p {
			t.Errorf("unexpected problem: %s", s)
		}
		return
	}
	for _, s := range p {
		if strings.Contains(s, want) {
			return
		}
	}
	t.Errorf("problems %q, want one mentioning %q", p, want)
}

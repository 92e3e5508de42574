package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoClickHouse is returned when the clickhouse-server binary is missing.
var ErrNoClickHouse = errors.New("clickhouse-server not found")

// InstallHint says how to get the binary.
const InstallHint = "install it with `deploy/local/clickhouse.sh install` " +
	"(or: sudo apt-get install -y clickhouse-server clickhouse-client), " +
	"or point -clickhouse.addr at a running server"

// ClickHouseConfig says where the server keeps its files and listens.
type ClickHouseConfig struct {
	Bin      string // binary name or path; "" = clickhouse-server on PATH
	Dir      string // config, data and logs
	Port     int    // native protocol on 127.0.0.1
	HTTPPort int
	// StartTimeout bounds the wait for the server to answer /ping.
	StartTimeout time.Duration
}

// ClickHouse is a running clickhouse-server child process.
type ClickHouse struct {
	cfg  ClickHouseConfig
	cmd  *exec.Cmd
	done chan struct{} // closed when the process exited
	err  error         // its exit status, read after done
	log  *slog.Logger
}

// StartClickHouse writes the config under cfg.Dir and starts the server,
// returning once it answers on its HTTP port. A server left running by an
// earlier `causality dev` with the same directory (pid file) is stopped
// first.
func StartClickHouse(ctx context.Context, cfg ClickHouseConfig, logger *slog.Logger) (*ClickHouse, error) {
	if cfg.Bin == "" {
		cfg.Bin = "clickhouse-server"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	bin, err := exec.LookPath(cfg.Bin)
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %s", ErrNoClickHouse, cfg.Bin, InstallHint)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("clickhouse dir: %w", err)
		}
	}
	stopStale(filepath.Join(dir, "clickhouse.pid"), filepath.Join(dir, "config.xml"), logger)
	for _, p := range []int{cfg.Port, cfg.HTTPPort} {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("clickhouse: 127.0.0.1:%d is in use: stop what holds it, pick other -dev.clickhouse-port/-dev.clickhouse-http-port, or use that server with -clickhouse.addr", p)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(serverConfig(cfg)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(usersConfig), 0o644); err != nil {
		return nil, err
	}
	out, err := os.OpenFile(filepath.Join(dir, "logs", "stdout.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config-file="+filepath.Join(dir, "config.xml"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so Ctrl-C reaches only us: the sink flushes
	// before we stop the server. It dies with us (Linux) if we are killed;
	// the kernel ties that to the thread that started it, so that thread
	// stays locked until the child exits.
	cmd.SysProcAttr = childAttr()
	ch := &ClickHouse{cfg: cfg, cmd: cmd, done: make(chan struct{}), log: logger}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer out.Close()
		defer close(ch.done)
		if err := cmd.Start(); err != nil {
			ch.err = err
			started <- err
			return
		}
		started <- nil
		ch.err = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	_ = os.WriteFile(filepath.Join(dir, "clickhouse.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)

	start := time.Now()
	deadline := time.NewTimer(cfg.StartTimeout)
	defer deadline.Stop()
	for {
		if ch.ping(ctx) == nil {
			logger.Info("clickhouse ready", "addr", ch.Addr(), "http", ch.HTTPAddr(), "pid", cmd.Process.Pid, "in", time.Since(start).Round(time.Millisecond), "dir", dir)
			return ch, nil
		}
		select {
		case <-ch.done:
			return nil, fmt.Errorf("clickhouse-server exited during start (%v); last log lines:\n%s", ch.err, ch.logTail())
		case <-deadline.C:
			ch.Stop()
			return nil, fmt.Errorf("clickhouse-server not ready after %s; last log lines:\n%s", cfg.StartTimeout, ch.logTail())
		case <-ctx.Done():
			ch.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Addr is the native protocol address, for -clickhouse.addr.
func (c *ClickHouse) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.cfg.Port)) }

// HTTPAddr is the HTTP interface address.
func (c *ClickHouse) HTTPAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.cfg.HTTPPort))
}

// ping asks the HTTP interface for "Ok." (a bare TCP probe of the native
// port makes the server log a warning).
func (c *ClickHouse) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.HTTPAddr()+"/ping", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64))
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(string(b), "Ok.") {
		return fmt.Errorf("clickhouse /ping: %s %q", res.Status, b)
	}
	return nil
}

// Ping checks that the server answers (a readiness check).
func (c *ClickHouse) Ping(ctx context.Context) error { return c.ping(ctx) }

// Stop terminates the server (SIGTERM, then SIGKILL after 20 s) and waits.
func (c *ClickHouse) Stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		c.log.Warn("clickhouse-server did not stop in 20 s; killing it")
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	_ = os.Remove(filepath.Join(c.cfg.Dir, "clickhouse.pid"))
	c.log.Info("clickhouse stopped")
}

func (c *ClickHouse) logTail() string {
	var b strings.Builder
	for _, f := range []string{"stdout.log", "clickhouse-server.err.log"} {
		data, err := os.ReadFile(filepath.Join(c.cfg.Dir, "logs", f))
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "----- %s -----\n%s\n", f, strings.Join(lines[max(0, len(lines)-20):], "\n"))
	}
	return b.String()
}

// stopStale stops a server started by an earlier run with this config that
// outlived it: the pid file names it, and its command line must name the
// config, so a reused pid is left alone.
func stopStale(pidFile, config string, logger *slog.Logger) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), config) {
		return
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return
	}
	logger.Warn("stopping the clickhouse-server left by an earlier run", "pid", pid)
	_ = p.Signal(syscall.SIGTERM)
	for range 200 {
		if err := p.Signal(syscall.Signal(0)); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = p.Kill()
}

// serverConfig is deploy/local/clickhouse.sh's config with our ports and
// paths. The root element <yandex> is what 18.16 needs; later servers still
// accept it.
func serverConfig(cfg ClickHouseConfig) string {
	return fmt.Sprintf(`<?xml version="1.0"?>
<!-- Generated by causality dev; rewritten on every start. -->
<yandex>
    <logger>
        <level>information</level>
        <log>%[1]s/logs/clickhouse-server.log</log>
        <errorlog>%[1]s/logs/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>%[2]d</tcp_port>
    <http_port>%[3]d</http_port>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>%[1]s/data/</path>
    <tmp_path>%[1]s/tmp/</tmp_path>
    <user_files_path>%[1]s/user_files/</user_files_path>
    <format_schema_path>%[1]s/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
`, cfg.Dir, cfg.Port, cfg.HTTPPort)
}

const usersConfig = `<?xml version="1.0"?>
<!-- Generated by causality dev; rewritten on every start. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
            <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
`

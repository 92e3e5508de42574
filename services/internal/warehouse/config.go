package warehouse

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"regexp"
	"time"
)

// Config says which ClickHouse server and database to use.
type Config struct {
	Addr     string
	Database string
	Username string
	Password string
	// DialTimeout bounds connecting; ReadTimeout bounds waiting for the
	// server's answer to one request (an insert or a query block).
	DialTimeout time.Duration
	ReadTimeout time.Duration
}

// RegisterFlags registers the -clickhouse.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "clickhouse.addr", "127.0.0.1:9000", "ClickHouse native protocol address host:port")
	fs.StringVar(&c.Database, "clickhouse.database", "causality", "ClickHouse database of the events table (created by the migrations)")
	fs.StringVar(&c.Username, "clickhouse.username", "default", "ClickHouse user")
	fs.StringVar(&c.Password, "clickhouse.password", "", "ClickHouse password")
	fs.DurationVar(&c.DialTimeout, "clickhouse.dial-timeout", 5*time.Second, "how long connecting to ClickHouse may take")
	fs.DurationVar(&c.ReadTimeout, "clickhouse.read-timeout", 60*time.Second, "how long ClickHouse may take to answer one insert or query")
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if c.Addr == "" {
		return errors.New("-clickhouse.addr is required")
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || port == "" {
		return fmt.Errorf("-clickhouse.addr: %q is not host:port", c.Addr)
	}
	if !identifier.MatchString(c.Database) {
		return fmt.Errorf("-clickhouse.database: %q is not a plain identifier (letters, digits, _; at most 64)", c.Database)
	}
	if c.DialTimeout <= 0 || c.ReadTimeout <= 0 {
		return errors.New("-clickhouse.dial-timeout and -clickhouse.read-timeout must be positive")
	}
	return nil
}

// withDefaults fills the timeouts a Config built in code may leave zero.
func (c Config) withDefaults() Config {
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 60 * time.Second
	}
	if c.Username == "" {
		c.Username = "default"
	}
	return c
}

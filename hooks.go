package pgkit

import (
	"context"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// hook installs the dialer, TLS and the user's pool hooks on pcfg. The
// connection backoff's BeforeConnect is Config.trace's, which runs the
// user's after it.
func (cfg *Config) hook(pcfg *pgxpool.Config) {
	pcfg.ConnConfig.DialFunc = cfg.dialer()
	if cfg.TLSConfig != nil {
		pcfg.ConnConfig.TLSConfig = cfg.TLSConfig
		for _, fb := range pcfg.ConnConfig.Fallbacks {
			fb.TLSConfig = cfg.TLSConfig
		}
	}
	pcfg.AfterConnect = cfg.AfterConnect
	pcfg.PrepareConn = cfg.PrepareConn
	pcfg.AfterRelease = cfg.AfterRelease
}

// dialer is Config.DialFunc, or a net.Dialer, with keepalives and
// TCP_USER_TIMEOUT on the TCP connections it opens.
func (cfg *Config) dialer() pgconn.DialFunc {
	keepalive := net.KeepAliveConfig{
		Enable:   true,
		Idle:     cfg.KeepaliveIdle,
		Interval: cfg.KeepaliveInterval,
		Count:    cfg.KeepaliveCount,
	}
	userTimeout := tcpUserTimeout(cfg.TCPUserTimeout)
	if cfg.DialFunc == nil {
		d := &net.Dialer{KeepAliveConfig: keepalive, ControlContext: userTimeout}
		return d.DialContext
	}
	dial := cfg.DialFunc
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			if err := tuneTCP(ctx, tc, keepalive, userTimeout); err != nil {
				_ = c.Close()
				return nil, err
			}
		}
		return c, nil
	}
}

// tuneTCP sets on a connection dialled by Config.DialFunc what pgkit's own
// dialer sets on its sockets.
func tuneTCP(ctx context.Context, c *net.TCPConn, keepalive net.KeepAliveConfig,
	userTimeout func(context.Context, string, string, syscall.RawConn) error) error {
	if err := c.SetKeepAliveConfig(keepalive); err != nil {
		return err
	}
	if userTimeout == nil {
		return nil
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return userTimeout(ctx, "tcp", c.RemoteAddr().String(), raw)
}

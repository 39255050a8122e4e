package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/config"
	"github.com/enrollq/enrollq/dashboard"
)

// The dashboard's credentials. The worker reads the same variables for the
// dashboard it mounts on ENROLLQ_HTTP_ADDR.
const (
	envDashboardUser     = "ENROLLQ_DASHBOARD_USER"
	envDashboardPassword = "ENROLLQ_DASHBOARD_PASSWORD"
)

// dashboardCmd takes its basic-auth pair from the global settings
// (--dashboard-user, --dashboard-password[-file]), which the worker's
// /dashboard/ uses too.
type dashboardCmd struct {
	Addr     string `name:"addr" default:"127.0.0.1:8081" help:"host:port to serve the dashboard on; an address other machines can reach needs ENROLLQ_DASHBOARD_USER and ENROLLQ_DASHBOARD_PASSWORD."`
	ReadOnly bool   `name:"read-only" help:"Show the queues without letting anyone run, archive or delete tasks."`
}

// dashboardAuth is the basic-auth pair of the dashboard.
type dashboardAuth struct {
	user     string
	password config.Secret
}

func (a dashboardAuth) enabled() bool { return a.user != "" && a.password != "" }

// check refuses a user without a password or the reverse.
func (a dashboardAuth) check() error {
	if (a.user == "") != (a.password == "") {
		return fmt.Errorf("%s and %s: set both for basic auth, or neither", envDashboardUser, envDashboardPassword)
	}
	return nil
}

// Run serves the dashboard until the context ends (SIGINT/SIGTERM).
func (c *dashboardCmd) Run(e *env) error {
	auth := dashboardAuth{user: e.cfg.DashboardUser, password: e.cfg.DashboardPassword}
	if err := auth.check(); err != nil {
		return usageErr("%v", err)
	}
	if err := dashboard.CheckListen(c.Addr, auth.enabled()); err != nil {
		return usageErr("--addr: %v", err)
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	h, err := newDashboard(e, rdb, auth, c.Addr, c.ReadOnly)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(dashboard.RootPath+"/", h)
	mux.Handle("GET /{$}", http.RedirectHandler(dashboard.RootPath+"/", http.StatusFound))

	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("dashboard: listening on %s: %w", c.Addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	e.log.Info("dashboard listening", "url", "http://"+ln.Addr().String()+dashboard.RootPath+"/",
		"basic_auth", auth.enabled(), "read_only", c.ReadOnly, "redis_url", e.cfg.RedactedRedisURL())

	select {
	case <-e.ctx.Done():
	case err := <-served:
		return fmt.Errorf("dashboard: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("dashboard: stopping: %w", err)
	}
	e.log.Info("dashboard stopped")
	return nil
}

// newDashboard builds the dashboard served on listen; without auth it
// answers only for that address, loopback names on its port and
// ENROLLQ_DASHBOARD_HOSTS.
func newDashboard(e *env, rdb redis.UniversalClient, auth dashboardAuth, listen string, readOnly bool) (http.Handler, error) {
	return dashboard.New(dashboard.Options{
		Redis:      rdb,
		User:       auth.user,
		Password:   auth.password.Reveal(),
		ListenAddr: listen,
		Hosts:      e.cfg.DashboardHostList(),
		ReadOnly:   readOnly,
	})
}

// workerDashboard returns the dashboard the worker mounts beside /healthz on
// ENROLLQ_HTTP_ADDR (read-only unless ENROLLQ_DASHBOARD_READ_ONLY=false), or
// nil when it must not: the HTTP server is off, or the
// address is reachable from other machines and ENROLLQ_DASHBOARD_USER and
// ENROLLQ_DASHBOARD_PASSWORD are not both set. The second case is a warning,
// not an error, so that a worker in a container can listen on 0.0.0.0 for
// its health checks without a dashboard password.
func workerDashboard(e *env, rdb redis.UniversalClient) http.Handler {
	if e.cfg.HTTPAddr == "" {
		return nil
	}
	auth := dashboardAuth{user: e.cfg.DashboardUser, password: e.cfg.DashboardPassword}
	if err := auth.check(); err != nil {
		e.log.Warn("dashboard not mounted on the worker", "reason", err.Error())
		return nil
	}
	if err := dashboard.CheckListen(e.cfg.HTTPAddr, auth.enabled()); err != nil {
		e.log.Warn("dashboard not mounted on the worker", "reason", "ENROLLQ_HTTP_ADDR: "+err.Error())
		return nil
	}
	h, err := newDashboard(e, rdb, auth, e.cfg.HTTPAddr, e.cfg.DashboardReadOnly)
	if err != nil {
		e.log.Warn("dashboard not mounted on the worker", "reason", err.Error())
		return nil
	}
	e.log.Info("dashboard mounted on the worker", "path", dashboard.RootPath+"/", "basic_auth", auth.enabled(), "read_only", e.cfg.DashboardReadOnly)
	return h
}

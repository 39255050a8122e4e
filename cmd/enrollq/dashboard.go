package main

import (
	"fmt"
	"net"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/dashboard"
)

// dashboardCmd takes its basic-auth pair from the global settings
// (--dashboard-user, --dashboard-password[-file]), which the worker's
// /dashboard/ uses too.
type dashboardCmd struct {
	Addr     string `name:"addr" default:"127.0.0.1:8081" help:"host:port to serve the dashboard on; an address other machines can reach needs ENROLLQ_DASHBOARD_USER and ENROLLQ_DASHBOARD_PASSWORD."`
	ReadOnly bool   `name:"read-only" help:"Show the queues without letting anyone run, archive or delete tasks."`
}

// Run serves the dashboard until the context ends (SIGINT/SIGTERM).
func (c *dashboardCmd) Run(e *env) error {
	if err := dashboard.CheckAuth(e.cfg.DashboardUser, e.cfg.DashboardPassword.Reveal()); err != nil {
		return usageErr("%v", err)
	}
	if err := dashboard.CheckListen(c.Addr, e.dashboardAuth()); err != nil {
		return usageErr("--addr: %v", err)
	}
	rdb, err := e.openRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	h, err := dashboard.New(e.dashboardOptions(rdb, c.Addr, c.ReadOnly))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("dashboard: listening on %s: %w", c.Addr, err)
	}
	e.log.Info("dashboard listening", "url", "http://"+ln.Addr().String()+dashboard.RootPath+"/",
		"basic_auth", e.dashboardAuth(), "read_only", c.ReadOnly, "redis_url", e.cfg.RedactedRedisURL())
	if err := dashboard.Serve(e.ctx, ln, h); err != nil {
		return err
	}
	e.log.Info("dashboard stopped")
	return nil
}

// dashboardAuth says whether the settings turn the dashboard's basic auth on.
func (e *env) dashboardAuth() bool { return e.cfg.DashboardUser != "" && e.cfg.DashboardPassword != "" }

// dashboardOptions are the dashboard's options on listen: without auth it
// answers only for that address, loopback names on its port and
// ENROLLQ_DASHBOARD_HOSTS.
func (e *env) dashboardOptions(rdb redis.UniversalClient, listen string, readOnly bool) dashboard.Options {
	return dashboard.Options{Redis: rdb, User: e.cfg.DashboardUser, Password: e.cfg.DashboardPassword.Reveal(),
		ListenAddr: listen, Hosts: e.cfg.DashboardHostList(), ReadOnly: readOnly}
}

// workerDashboard returns the dashboard the worker mounts beside /healthz on
// ENROLLQ_HTTP_ADDR (read-only unless ENROLLQ_DASHBOARD_READ_ONLY=false), or
// nil when it must not: the HTTP server is off, or the address is reachable
// from other machines and ENROLLQ_DASHBOARD_USER and
// ENROLLQ_DASHBOARD_PASSWORD are not both set. The second case is a
// warning, not an error, so that a worker in a container can listen on
// 0.0.0.0 for its health checks without a dashboard password.
func workerDashboard(e *env, rdb redis.UniversalClient) http.Handler {
	if e.cfg.HTTPAddr == "" {
		return nil
	}
	why := dashboard.CheckAuth(e.cfg.DashboardUser, e.cfg.DashboardPassword.Reveal())
	if err := dashboard.CheckListen(e.cfg.HTTPAddr, e.dashboardAuth()); why == nil && err != nil {
		why = fmt.Errorf("ENROLLQ_HTTP_ADDR: %w", err)
	}
	var h http.Handler
	if why == nil {
		h, why = dashboard.New(e.dashboardOptions(rdb, e.cfg.HTTPAddr, e.cfg.DashboardReadOnly))
	}
	if why != nil {
		e.log.Warn("dashboard not mounted on the worker", "reason", why.Error())
		return nil
	}
	e.log.Info("dashboard mounted on the worker", "path", dashboard.RootPath+"/", "basic_auth", e.dashboardAuth(), "read_only", e.cfg.DashboardReadOnly)
	return h
}

package lms

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SignatureHeader carries a webhook body's HMAC-SHA256 under the
// webhook's secret: "sha256=<hex>".
const SignatureHeader = "X-Livefuse-Signature"

// Sign returns the SignatureHeader value of body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

const (
	webhookBackoffMin = 500 * time.Millisecond
	webhookBackoffMax = 30 * time.Second
	maxWebhookURL     = 2048
)

func validateWebhook(w AlertWebhook) error {
	if len(w.URL) > maxWebhookURL {
		return fmt.Errorf("url longer than %d bytes", maxWebhookURL)
	}
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("url: want an http:// or https:// URL with a host")
	}
	if len(w.Secret) < 16 {
		return errors.New("secret: at least 16 characters (the body is signed with it)")
	}
	return nil
}

// webhook sends alert bodies to one URL from a bounded queue.
type webhook struct {
	url     string
	secret  string
	where   string // scheme://host, for logs (never the path, query or secret)
	retries int
	client  *http.Client
	log     *slog.Logger
	m       *alertMetrics

	mu    sync.Mutex
	queue [][]byte
	max   int
	wake  chan struct{}
}

func newWebhook(w AlertWebhook, cfg AlertsConfig, m *alertMetrics, log *slog.Logger) *webhook {
	where := "webhook"
	if u, err := url.Parse(w.URL); err == nil {
		where = u.Scheme + "://" + u.Host
	}
	return &webhook{url: w.URL, secret: w.Secret, where: where, retries: cfg.WebhookRetries,
		client: &http.Client{Timeout: cfg.WebhookTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		log: log, m: m, max: cfg.WebhookQueue, wake: make(chan struct{}, 1)}
}

// enqueue adds body, dropping the oldest when the queue is full. It never
// blocks.
func (w *webhook) enqueue(body []byte) {
	w.mu.Lock()
	if len(w.queue) >= w.max {
		w.queue = w.queue[1:]
		w.m.webhook.WithLabelValues("dropped").Inc()
		w.log.Warn("alert webhook queue full: oldest alert dropped", "webhook", w.where)
	}
	w.queue = append(w.queue, body)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *webhook) next() ([]byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return nil, false
	}
	b := w.queue[0]
	w.queue[0] = nil
	w.queue = w.queue[1:]
	return b, true
}

// run delivers queued bodies in order until ctx ends.
func (w *webhook) run(ctx context.Context) {
	for {
		body, ok := w.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
				continue
			}
		}
		w.deliver(ctx, body)
	}
}

// deliver sends body, retrying failures with doubling backoff up to
// w.retries times.
func (w *webhook) deliver(ctx context.Context, body []byte) {
	backoff := webhookBackoffMin
	for attempt := 0; ; attempt++ {
		retry, err := w.send(ctx, body)
		if err == nil {
			w.m.webhook.WithLabelValues("ok").Inc()
			return
		}
		if !retry || attempt >= w.retries || ctx.Err() != nil {
			w.m.webhook.WithLabelValues("failed").Inc()
			w.log.Warn("alert webhook failed", "webhook", w.where, "attempts", attempt+1, "reason", err.Error())
			return
		}
		w.m.webhook.WithLabelValues("retried").Inc()
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, webhookBackoffMax)
	}
}

// send makes one attempt; retry says whether a failure is worth another.
func (w *webhook) send(ctx context.Context, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return false, errors.New("bad request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "livefuse-alerts")
	req.Header.Set(SignatureHeader, Sign(w.secret, body))
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may carry credentials: not in the log
		}
		return true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return true, fmt.Errorf("status %d", resp.StatusCode)
	}
	return false, fmt.Errorf("status %d", resp.StatusCode)
}

// alertMetrics are the alert engine's counters, exported by the collector
// (AlertsCollector).
type alertMetrics struct {
	webhook     *prometheus.CounterVec
	transitions atomic.Int64
	overflow    atomic.Int64
	evalSeconds atomic.Uint64 // nanoseconds of the last evaluation
}

func newAlertMetrics() *alertMetrics {
	return &alertMetrics{webhook: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "livefuse_alerts_webhook_deliveries_total",
		Help: "Alert webhook deliveries by result: ok, retried (an attempt failed, another follows), failed (given up), dropped (queue full).",
	}, []string{"result"})}
}

var (
	descAlertsFiring = prometheus.NewDesc("livefuse_alerts_firing", "Alerts firing, by rule and severity.", []string{"rule", "severity"}, nil)
	descAlertsTrans  = prometheus.NewDesc("livefuse_alerts_transitions_total", "Alert transitions (firing or resolved).", nil, nil)
	descAlertsEval   = prometheus.NewDesc("livefuse_alerts_evaluation_seconds", "Duration of the last evaluation of every rule.", nil, nil)
	descAlertsOver   = prometheus.NewDesc("livefuse_alerts_state_overflow_total", "Conditions not tracked because the engine held its maximum of states.", nil, nil)
	descDependencyUp = prometheus.NewDesc("livefuse_dependency_up", "1 when the node reached the dependency at the last probe (etcd; kafka and s3 when configured).", []string{"dependency"}, nil)
	descUnitUp       = prometheus.NewDesc("livefuse_unit_up", "1 when a unit of the config has a live node in the registry, as this node sees it.", []string{"unit"}, nil)
)

// Collector returns the engine's Prometheus metrics.
func (a *Alerts) Collector() prometheus.Collector { return alertsCollector{a} }

type alertsCollector struct{ a *Alerts }

func (c alertsCollector) Describe(ch chan<- *prometheus.Desc) {
	c.a.m.webhook.Describe(ch)
	for _, d := range []*prometheus.Desc{descAlertsFiring, descAlertsTrans, descAlertsEval, descAlertsOver, descDependencyUp, descUnitUp} {
		ch <- d
	}
}

func (c alertsCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	a.m.webhook.Collect(ch)
	type rs struct{ rule, sev string }
	n := map[rs]int{}
	a.mu.Lock()
	for _, r := range a.rules {
		sev := r.Severity
		if sev == "" {
			sev = "warning"
		}
		n[rs{r.Name, sev}] += 0
	}
	for _, st := range a.states {
		if st.firing {
			n[rs{st.alert.Rule, st.alert.Severity}]++
		}
	}
	a.mu.Unlock()
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(descAlertsFiring, prometheus.GaugeValue, float64(v), k.rule, k.sev)
	}
	ch <- prometheus.MustNewConstMetric(descAlertsTrans, prometheus.CounterValue, float64(a.m.transitions.Load()))
	ch <- prometheus.MustNewConstMetric(descAlertsEval, prometheus.GaugeValue, float64(a.m.evalSeconds.Load())/1e9)
	ch <- prometheus.MustNewConstMetric(descAlertsOver, prometheus.CounterValue, float64(a.m.overflow.Load()))
	if p := a.probes.Load(); p != nil {
		for kind := range p.haveProbe {
			_, failed := p.failed[kind]
			ch <- prometheus.MustNewConstMetric(descDependencyUp, prometheus.GaugeValue, b2f(!failed), strings.TrimSuffix(kind, "_unreachable"))
		}
		if p.unitsOK {
			for _, u := range p.expected {
				ch <- prometheus.MustNewConstMetric(descUnitUp, prometheus.GaugeValue, b2f(p.alive[u]), u)
			}
		}
	}
}

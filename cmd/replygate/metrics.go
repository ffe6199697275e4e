package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/replygate/replygate/milter"
	"github.com/replygate/replygate/policy"
	"github.com/replygate/replygate/vacation"
)

// newRegistry gathers what /metrics shows: the milter's verdicts, the
// responder's and outbox's counts, credit, and the Go runtime. The
// counters live as atomics in their packages (which know nothing of
// Prometheus) and are read at scrape time.
func newRegistry(m *milter.Metrics, r *vacation.Responder, o *vacation.Outbox, c *vacation.Credit) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	u := func(a interface{ Load() uint64 }) func() float64 { return func() float64 { return float64(a.Load()) } }
	reg.MustRegister(
		gauge("replygate_milter_sessions", "Open milter sessions.", func() float64 { return float64(m.Sessions.Load()) }),
		counter("replygate_messages_total", "Messages judged.", u(&m.Messages)),
		counter("replygate_messages_allowed_total", "Messages that may be auto-replied to.", u(&m.Allowed)),
		counter("replygate_messages_suppressed_total", "Messages that must not be auto-replied to.", u(&m.Suppressed)),
		counter("replygate_stamped_total", "Outbound messages stamped X-Allow-Auto-Reply: no.", u(&m.Stamped)),
		counter("replygate_milter_errors_total", "Messages that met an internal error and got the fail action.", u(&m.Errors)),
		counter("replygate_milter_overloads_total", "Sessions or replies refused by flow control (fail action).", u(&m.Overloads)),
		counter("replygate_replies_queued_total", "Vacation replies queued.", u(&r.Counts.Queued)),
		counter("replygate_replies_duplicate_total", "Vacation replies not queued: already answered this period.", u(&r.Counts.Duplicate)),
		counter("replygate_replies_skipped_total", "Vacation replies skipped: outbox full, unauthenticated sender, or store error.",
			func() float64 {
				return float64(r.Counts.Full.Load() + r.Counts.Unauthenticated.Load() + r.Counts.Errors.Load())
			}),
		counter("replygate_responder_errors_total", "Offers that failed on the store (the message flowed on without a reply).", u(&r.Counts.Errors)),
		counter("replygate_replies_sent_total", "Vacation replies the relay accepted.", u(&o.Sent)),
		counter("replygate_replies_deferred_total", "Vacation reply attempts that failed temporarily and wait for a retry.", u(&o.Retried)),
		counter("replygate_replies_failed_total", "Vacation replies dropped after a permanent failure.", u(&o.Dropped)),
		gauge("replygate_outbox_depth", "Replies in the outbox.", func() float64 { return float64(o.Depth()) }),
		gauge("replygate_credit_in_use", "Reply credit held by queued replies.", func() float64 { return float64(c.InUse()) }),
		gauge("replygate_credit_pool", "Reply credit left in the shared pool.", func() float64 { return float64(c.Pool()) }),
		reasonCollector{m},
	)
	return reg
}

var (
	verdictDesc = prometheus.NewDesc("replygate_verdicts_total", "Suppressed auto-replies by reason.", []string{"reason"}, nil)
	stampDesc   = prometheus.NewDesc("replygate_stamps_total", "Stamps by reason.", []string{"reason"}, nil)
)

// reasonCollector shows milter.Metrics' per-reason counts.
type reasonCollector struct{ m *milter.Metrics }

func (reasonCollector) Describe(ch chan<- *prometheus.Desc) { ch <- verdictDesc; ch <- stampDesc }

func (c reasonCollector) Collect(ch chan<- prometheus.Metric) {
	for i, r := range policy.KnownReasons() {
		ch <- prometheus.MustNewConstMetric(verdictDesc, prometheus.CounterValue, float64(c.m.Reasons[i].Load()), string(r))
		ch <- prometheus.MustNewConstMetric(stampDesc, prometheus.CounterValue, float64(c.m.StampReasons[i].Load()), string(r))
	}
}

package jwtauth

import (
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

// JWKS fetch results, the label values of odin_jwt_jwks_fetches_total.
const (
	fetchOK        = "ok"         // a usable key set was loaded
	fetchError     = "error"      // transport error or timeout
	fetchBadStatus = "bad_status" // an HTTP status other than 200
	fetchInvalid   = "invalid"    // too large, not a JWKS, or no usable key
)

// metrics are the verifier's collectors. They always exist, so the code
// never checks for nil; they are registered only when a Registerer is given.
type metrics struct {
	fetches         *prometheus.CounterVec
	verifications   *prometheus.CounterVec
	signatureChecks prometheus.Counter
	keySetAge       prometheus.GaugeFunc
	keySetKeys      prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, ks *keyStore) (*metrics, error) {
	m := &metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_jwt_jwks_fetches_total",
			Help: "JWKS fetches by result: ok, error (transport or timeout), bad_status, invalid (not a usable key set).",
		}, []string{"result"}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_jwt_verifications_total",
			Help: "JWT verifications by result: ok or the reason the token was refused.",
		}, []string{"result"}),
		signatureChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "odin_jwt_signature_checks_total",
			Help: "JWS signature verifications performed (concurrent verifications of one token share one).",
		}),
		keySetAge: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "odin_jwt_jwks_age_seconds",
			Help: "Seconds since the key set in use was fetched; -1 while none has been loaded.",
		}, func() float64 {
			age, ok := ks.age()
			if !ok {
				return -1
			}
			return math.Round(age.Seconds())
		}),
		keySetKeys: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "odin_jwt_jwks_keys",
			Help: "Usable keys in the key set in use.",
		}, func() float64 { return float64(ks.size()) }),
	}
	for _, r := range []string{fetchOK, fetchError, fetchBadStatus, fetchInvalid} {
		m.fetches.WithLabelValues(r)
	}
	for _, r := range allReasons {
		m.verifications.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.fetches, m.verifications, m.signatureChecks, m.keySetAge, m.keySetKeys} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("jwtauth: register metrics: %w", err)
		}
	}
	return m, nil
}

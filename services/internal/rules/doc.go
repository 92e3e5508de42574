// Package rules reacts to events and anomalies. A causality.admin.v1.RuleSet
// (rules and webhooks, protobuf JSON in a file the admin API writes) flows
// in through Load or the file watched by Run and is compiled into a Set,
// indexed by app and event type. Events (HandleEvents) and the detector's
// anomalies (HandleAnomalies) flow in; each rule whose condition holds,
// whose rate is reached and whose cooldown has passed (in event time) fires,
// and a causality.admin.v1.RuleFiring flows out to the firings topic, the
// rule's Kafka topics and its webhooks, through consumer-defined
// interfaces (RecordWriter, Deliverer). Validate, ValidateSet and Explain
// serve the admin API. docs/rules.md has the semantics.
package rules

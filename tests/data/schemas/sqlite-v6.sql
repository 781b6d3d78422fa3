-- A new database of ceptoar's schema version 6, as commit e12ff9c made it (make.sh).
CREATE TABLE subscribers (
	code VARCHAR(6) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	prefecture VARCHAR(2) NOT NULL, 
	active BOOLEAN NOT NULL, 
	updated_at DATETIME NOT NULL, 
	CONSTRAINT pk_subscribers PRIMARY KEY (code)
);
CREATE INDEX ix_subscribers_prefecture ON subscribers (prefecture);
CREATE TABLE notices (
	id INTEGER NOT NULL, 
	source VARCHAR(64) NOT NULL, 
	source_id VARCHAR(128) NOT NULL, 
	format VARCHAR(16) NOT NULL, 
	sent_at DATETIME NOT NULL, 
	received_at DATETIME NOT NULL, 
	payload TEXT NOT NULL, 
	CONSTRAINT pk_notices PRIMARY KEY (id), 
	CONSTRAINT uq_notices_source_source_id UNIQUE (source, source_id)
);
CREATE TABLE feeds (
	name VARCHAR(64) NOT NULL, 
	key_hash VARCHAR(64) NOT NULL, 
	sources JSON NOT NULL, 
	signing_secret VARCHAR(128), 
	created_at DATETIME NOT NULL, 
	revoked_at DATETIME, 
	CONSTRAINT pk_feeds PRIMARY KEY (name), 
	CONSTRAINT uq_feeds_key_hash UNIQUE (key_hash)
);
CREATE TABLE receipts (
	source VARCHAR(64) NOT NULL, 
	source_id VARCHAR(128) NOT NULL, 
	format VARCHAR(16) NOT NULL, 
	feed VARCHAR(64) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	received_at DATETIME NOT NULL, 
	CONSTRAINT pk_receipts PRIMARY KEY (source, source_id)
);
CREATE TABLE audit (
	id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	operator VARCHAR(128) NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	alert_id VARCHAR(32), 
	notice_id VARCHAR(128), 
	detail JSON NOT NULL, 
	os_user VARCHAR(64), 
	host VARCHAR(255), 
	CONSTRAINT pk_audit PRIMARY KEY (id)
);
CREATE INDEX ix_audit_at ON audit (at);
CREATE INDEX ix_audit_notice_id ON audit (notice_id);
CREATE TABLE schema_version (
	version INTEGER NOT NULL, 
	applied_at DATETIME NOT NULL, 
	CONSTRAINT pk_schema_version PRIMARY KEY (version)
);
CREATE TABLE addresses (
	id INTEGER NOT NULL, 
	subscriber_code VARCHAR(6) NOT NULL, 
	email VARCHAR(254) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	language VARCHAR(2) NOT NULL, 
	active BOOLEAN NOT NULL, 
	updated_at DATETIME NOT NULL, 
	min_severity VARCHAR(16) DEFAULT 'low' NOT NULL, 
	categories JSON DEFAULT '[]' NOT NULL, 
	prefectures JSON DEFAULT '[]' NOT NULL, 
	wants_tests BOOLEAN DEFAULT 0 NOT NULL, 
	contact BOOLEAN DEFAULT 0 NOT NULL, 
	CONSTRAINT pk_addresses PRIMARY KEY (id), 
	CONSTRAINT fk_addresses_subscriber_code_subscribers FOREIGN KEY(subscriber_code) REFERENCES subscribers (code), 
	CONSTRAINT uq_addresses_email UNIQUE (email)
);
CREATE INDEX ix_addresses_subscriber_code ON addresses (subscriber_code);
CREATE TABLE alerts (
	id VARCHAR(32) NOT NULL, 
	notice_id INTEGER NOT NULL, 
	source VARCHAR(64) NOT NULL, 
	source_id VARCHAR(128) NOT NULL, 
	msg_type VARCHAR(16) NOT NULL, 
	severity VARCHAR(16) NOT NULL, 
	severity_rules JSON NOT NULL, 
	tlp VARCHAR(16) NOT NULL, 
	title VARCHAR(300) NOT NULL, 
	notice JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	state VARCHAR(16) DEFAULT 'active' NOT NULL, 
	held_reason TEXT, 
	thread_id VARCHAR(32), 
	parent_id VARCHAR(32), 
	status VARCHAR(16) DEFAULT 'actual' NOT NULL, 
	expires_at DATETIME, 
	jobs_published_at DATETIME, 
	pending JSON, 
	CONSTRAINT pk_alerts PRIMARY KEY (id), 
	CONSTRAINT uq_alerts_notice_id UNIQUE (notice_id), 
	CONSTRAINT fk_alerts_notice_id_notices FOREIGN KEY(notice_id) REFERENCES notices (id)
);
CREATE INDEX ix_alerts_thread_id ON alerts (thread_id);
CREATE INDEX ix_alerts_source_id ON alerts (source_id);
CREATE TABLE deliveries (
	id INTEGER NOT NULL, 
	alert_id VARCHAR(32) NOT NULL, 
	address_id INTEGER NOT NULL, 
	email VARCHAR(254) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	message_id VARCHAR(255) NOT NULL, 
	last_code INTEGER, 
	last_reply TEXT, 
	lease_until DATETIME, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	sent_at DATETIME, 
	in_reply_to VARCHAR(255), 
	"references" TEXT, 
	CONSTRAINT pk_deliveries PRIMARY KEY (id), 
	CONSTRAINT uq_deliveries_alert_id_address_id UNIQUE (alert_id, address_id), 
	CONSTRAINT fk_deliveries_alert_id_alerts FOREIGN KEY(alert_id) REFERENCES alerts (id), 
	CONSTRAINT fk_deliveries_address_id_addresses FOREIGN KEY(address_id) REFERENCES addresses (id), 
	CONSTRAINT uq_deliveries_message_id UNIQUE (message_id)
);
CREATE INDEX ix_deliveries_alert_id_state ON deliveries (alert_id, state);
CREATE INDEX ix_deliveries_state_lease_until ON deliveries (state, lease_until);
CREATE TABLE delivery_events (
	id INTEGER NOT NULL, 
	delivery_id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	attempt INTEGER NOT NULL, 
	smtp_code INTEGER, 
	smtp_reply TEXT, 
	CONSTRAINT pk_delivery_events PRIMARY KEY (id), 
	CONSTRAINT fk_delivery_events_delivery_id_deliveries FOREIGN KEY(delivery_id) REFERENCES deliveries (id)
);
CREATE INDEX ix_delivery_events_delivery_id ON delivery_events (delivery_id);
INSERT INTO schema_version VALUES(6,'2026-12-01 00:00:00');

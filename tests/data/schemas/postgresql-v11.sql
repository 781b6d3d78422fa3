-- A new database of ceptoar's schema version 11, as commit 76d43b2 made it (make.sh).
CREATE TABLE public.addresses (
    id bigint NOT NULL,
    subscriber_code character varying(6) NOT NULL,
    email character varying(254) NOT NULL,
    role character varying(16) NOT NULL,
    language character varying(2) NOT NULL,
    active boolean NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    min_severity character varying(16) DEFAULT 'low'::character varying NOT NULL,
    categories json DEFAULT '[]'::json NOT NULL,
    prefectures json DEFAULT '[]'::json NOT NULL,
    wants_tests boolean DEFAULT false NOT NULL,
    contact boolean DEFAULT false NOT NULL
);
CREATE SEQUENCE public.addresses_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.addresses_id_seq OWNED BY public.addresses.id;
CREATE TABLE public.alerts (
    id character varying(32) NOT NULL,
    notice_id bigint NOT NULL,
    source character varying(64) NOT NULL,
    source_id character varying(128) NOT NULL,
    msg_type character varying(16) NOT NULL,
    severity character varying(16) NOT NULL,
    severity_rules json NOT NULL,
    tlp character varying(16) NOT NULL,
    title character varying(300) NOT NULL,
    notice json NOT NULL,
    created_at timestamp with time zone NOT NULL,
    state character varying(16) DEFAULT 'active'::character varying NOT NULL,
    held_reason text,
    thread_id character varying(32),
    parent_id character varying(32),
    status character varying(16) DEFAULT 'actual'::character varying NOT NULL,
    expires_at timestamp with time zone,
    jobs_published_at timestamp with time zone,
    pending json,
    released_by character varying(128),
    released_at timestamp with time zone
);
CREATE TABLE public.answers (
    id bigint NOT NULL,
    at timestamp with time zone NOT NULL,
    delivery_id bigint NOT NULL,
    alert_id character varying(32) NOT NULL,
    subscriber_code character varying(6) NOT NULL,
    answer character varying(16) NOT NULL,
    via character varying(8) NOT NULL,
    by character varying(320)
);
CREATE SEQUENCE public.answers_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.answers_id_seq OWNED BY public.answers.id;
CREATE TABLE public.audit (
    id bigint NOT NULL,
    at timestamp with time zone NOT NULL,
    operator character varying(128) NOT NULL,
    action character varying(32) NOT NULL,
    alert_id character varying(32),
    notice_id character varying(128),
    detail json NOT NULL,
    os_user character varying(64),
    host character varying(255)
);
CREATE SEQUENCE public.audit_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.audit_id_seq OWNED BY public.audit.id;
CREATE TABLE public.deliveries (
    id bigint NOT NULL,
    alert_id character varying(32) NOT NULL,
    address_id bigint NOT NULL,
    email character varying(254) NOT NULL,
    state character varying(16) NOT NULL,
    attempts integer NOT NULL,
    message_id character varying(255) NOT NULL,
    last_code integer,
    last_reply text,
    lease_until timestamp with time zone,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    sent_at timestamp with time zone,
    in_reply_to character varying(255),
    "references" text,
    purpose character varying(16) DEFAULT 'alert'::character varying NOT NULL
);
CREATE SEQUENCE public.deliveries_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.deliveries_id_seq OWNED BY public.deliveries.id;
CREATE TABLE public.delivery_events (
    id bigint NOT NULL,
    delivery_id bigint NOT NULL,
    at timestamp with time zone NOT NULL,
    state character varying(16) NOT NULL,
    attempt integer NOT NULL,
    smtp_code integer,
    smtp_reply text
);
CREATE SEQUENCE public.delivery_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.delivery_events_id_seq OWNED BY public.delivery_events.id;
CREATE TABLE public.escalations (
    id bigint NOT NULL,
    alert_id character varying(32) NOT NULL,
    subscriber_code character varying(6) NOT NULL,
    step character varying(16) NOT NULL,
    at timestamp with time zone NOT NULL,
    by character varying(128) NOT NULL,
    deliveries integer NOT NULL
);
CREATE SEQUENCE public.escalations_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.escalations_id_seq OWNED BY public.escalations.id;
CREATE TABLE public.feeds (
    name character varying(64) NOT NULL,
    key_hash character varying(64) NOT NULL,
    sources json NOT NULL,
    signing_secret character varying(128),
    created_at timestamp with time zone NOT NULL,
    revoked_at timestamp with time zone
);
CREATE TABLE public.notices (
    id bigint NOT NULL,
    source character varying(64) NOT NULL,
    source_id character varying(128) NOT NULL,
    format character varying(16) NOT NULL,
    sent_at timestamp with time zone NOT NULL,
    received_at timestamp with time zone NOT NULL,
    payload text NOT NULL
);
CREATE SEQUENCE public.notices_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.notices_id_seq OWNED BY public.notices.id;
CREATE TABLE public.receipts (
    source character varying(64) NOT NULL,
    source_id character varying(128) NOT NULL,
    format character varying(16) NOT NULL,
    feed character varying(64) NOT NULL,
    state character varying(16) NOT NULL,
    received_at timestamp with time zone NOT NULL,
    reason text,
    field character varying(200)
);
CREATE TABLE public.returned (
    id bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    kind character varying(16) NOT NULL,
    delivery_id bigint,
    matched boolean NOT NULL,
    outcome text NOT NULL,
    recipient character varying(320),
    status character varying(16),
    diagnostic text,
    subject character varying(300) NOT NULL,
    size integer NOT NULL,
    message bytea NOT NULL
);
CREATE SEQUENCE public.returned_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.returned_id_seq OWNED BY public.returned.id;
CREATE TABLE public.schema_version (
    version integer NOT NULL,
    applied_at timestamp with time zone NOT NULL
);
CREATE SEQUENCE public.schema_version_version_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.schema_version_version_seq OWNED BY public.schema_version.version;
CREATE TABLE public.subscribers (
    code character varying(6) NOT NULL,
    name character varying(200) NOT NULL,
    prefecture character varying(2) NOT NULL,
    active boolean NOT NULL,
    updated_at timestamp with time zone NOT NULL
);
ALTER TABLE ONLY public.addresses ALTER COLUMN id SET DEFAULT nextval('public.addresses_id_seq'::regclass);
ALTER TABLE ONLY public.answers ALTER COLUMN id SET DEFAULT nextval('public.answers_id_seq'::regclass);
ALTER TABLE ONLY public.audit ALTER COLUMN id SET DEFAULT nextval('public.audit_id_seq'::regclass);
ALTER TABLE ONLY public.deliveries ALTER COLUMN id SET DEFAULT nextval('public.deliveries_id_seq'::regclass);
ALTER TABLE ONLY public.delivery_events ALTER COLUMN id SET DEFAULT nextval('public.delivery_events_id_seq'::regclass);
ALTER TABLE ONLY public.escalations ALTER COLUMN id SET DEFAULT nextval('public.escalations_id_seq'::regclass);
ALTER TABLE ONLY public.notices ALTER COLUMN id SET DEFAULT nextval('public.notices_id_seq'::regclass);
ALTER TABLE ONLY public.returned ALTER COLUMN id SET DEFAULT nextval('public.returned_id_seq'::regclass);
ALTER TABLE ONLY public.schema_version ALTER COLUMN version SET DEFAULT nextval('public.schema_version_version_seq'::regclass);
ALTER TABLE ONLY public.addresses
    ADD CONSTRAINT pk_addresses PRIMARY KEY (id);
ALTER TABLE ONLY public.alerts
    ADD CONSTRAINT pk_alerts PRIMARY KEY (id);
ALTER TABLE ONLY public.answers
    ADD CONSTRAINT pk_answers PRIMARY KEY (id);
ALTER TABLE ONLY public.audit
    ADD CONSTRAINT pk_audit PRIMARY KEY (id);
ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT pk_deliveries PRIMARY KEY (id);
ALTER TABLE ONLY public.delivery_events
    ADD CONSTRAINT pk_delivery_events PRIMARY KEY (id);
ALTER TABLE ONLY public.escalations
    ADD CONSTRAINT pk_escalations PRIMARY KEY (id);
ALTER TABLE ONLY public.feeds
    ADD CONSTRAINT pk_feeds PRIMARY KEY (name);
ALTER TABLE ONLY public.notices
    ADD CONSTRAINT pk_notices PRIMARY KEY (id);
ALTER TABLE ONLY public.receipts
    ADD CONSTRAINT pk_receipts PRIMARY KEY (source, source_id);
ALTER TABLE ONLY public.returned
    ADD CONSTRAINT pk_returned PRIMARY KEY (id);
ALTER TABLE ONLY public.schema_version
    ADD CONSTRAINT pk_schema_version PRIMARY KEY (version);
ALTER TABLE ONLY public.subscribers
    ADD CONSTRAINT pk_subscribers PRIMARY KEY (code);
ALTER TABLE ONLY public.addresses
    ADD CONSTRAINT uq_addresses_email UNIQUE (email);
ALTER TABLE ONLY public.alerts
    ADD CONSTRAINT uq_alerts_notice_id UNIQUE (notice_id);
ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT uq_deliveries_alert_address_purpose UNIQUE (alert_id, address_id, purpose);
ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT uq_deliveries_message_id UNIQUE (message_id);
ALTER TABLE ONLY public.escalations
    ADD CONSTRAINT uq_escalations_alert_subscriber_step UNIQUE (alert_id, subscriber_code, step);
ALTER TABLE ONLY public.feeds
    ADD CONSTRAINT uq_feeds_key_hash UNIQUE (key_hash);
ALTER TABLE ONLY public.notices
    ADD CONSTRAINT uq_notices_source_source_id UNIQUE (source, source_id);
CREATE INDEX ix_addresses_subscriber_code ON public.addresses USING btree (subscriber_code);
CREATE INDEX ix_alerts_source_id ON public.alerts USING btree (source_id);
CREATE INDEX ix_alerts_thread_id ON public.alerts USING btree (thread_id);
CREATE INDEX ix_answers_alert_id ON public.answers USING btree (alert_id);
CREATE INDEX ix_answers_delivery_id ON public.answers USING btree (delivery_id);
CREATE INDEX ix_audit_at ON public.audit USING btree (at);
CREATE INDEX ix_audit_notice_id ON public.audit USING btree (notice_id);
CREATE INDEX ix_deliveries_alert_id_state ON public.deliveries USING btree (alert_id, state);
CREATE INDEX ix_deliveries_state_lease_until ON public.deliveries USING btree (state, lease_until);
CREATE INDEX ix_delivery_events_delivery_id ON public.delivery_events USING btree (delivery_id);
CREATE INDEX ix_returned_delivery_id ON public.returned USING btree (delivery_id);
CREATE INDEX ix_returned_received_at ON public.returned USING btree (received_at);
CREATE INDEX ix_subscribers_prefecture ON public.subscribers USING btree (prefecture);
ALTER TABLE ONLY public.addresses
    ADD CONSTRAINT fk_addresses_subscriber_code_subscribers FOREIGN KEY (subscriber_code) REFERENCES public.subscribers(code);
ALTER TABLE ONLY public.alerts
    ADD CONSTRAINT fk_alerts_notice_id_notices FOREIGN KEY (notice_id) REFERENCES public.notices(id);
ALTER TABLE ONLY public.answers
    ADD CONSTRAINT fk_answers_alert_id_alerts FOREIGN KEY (alert_id) REFERENCES public.alerts(id);
ALTER TABLE ONLY public.answers
    ADD CONSTRAINT fk_answers_delivery_id_deliveries FOREIGN KEY (delivery_id) REFERENCES public.deliveries(id);
ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT fk_deliveries_address_id_addresses FOREIGN KEY (address_id) REFERENCES public.addresses(id);
ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT fk_deliveries_alert_id_alerts FOREIGN KEY (alert_id) REFERENCES public.alerts(id);
ALTER TABLE ONLY public.delivery_events
    ADD CONSTRAINT fk_delivery_events_delivery_id_deliveries FOREIGN KEY (delivery_id) REFERENCES public.deliveries(id);
ALTER TABLE ONLY public.escalations
    ADD CONSTRAINT fk_escalations_alert_id_alerts FOREIGN KEY (alert_id) REFERENCES public.alerts(id);
ALTER TABLE ONLY public.returned
    ADD CONSTRAINT fk_returned_delivery_id_deliveries FOREIGN KEY (delivery_id) REFERENCES public.deliveries(id);
INSERT INTO public.schema_version VALUES (11, '2026-12-01 00:00:00+00');

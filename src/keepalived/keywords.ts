/**
 * The keepalived.conf grammar vipshift reads, as data: one table per section, like keepalived's
 * install_keyword_root()/install_keyword(). The generic parser (parser.ts) walks tokens with
 * these tables; import.ts gives the statements their meaning. A keyword absent from its table
 * is warned as unknown; one marked `unsupported` is parsed and warned with the reason.
 */

export type SectionName =
  | 'root'
  | 'global_defs'
  | 'vrrp_instance'
  | 'vrrp_sync_group'
  | 'virtual_server'
  | 'real_server'
  | 'checker'
  | 'url';

export interface KeywordSpec {
  /** Words after the keyword on its line: [min, max]. */
  args: readonly [number, number];
  /**
   * What the braces after the keyword hold: a section of keywords, `lines` of free words
   * (an address per line), or `skip` (balanced braces read over, contents not interpreted).
   * Absent: the keyword takes no block.
   */
  block?: SectionName | 'lines' | 'skip';
  /** keepalived spells some keywords two ways; the parser hands on the canonical one. */
  alias?: string;
  /** Read, then left out of the vipshift configuration: why, warned with file and line. */
  unsupported?: string;
}

export type Section = Readonly<Record<string, KeywordSpec>>;

const NOTIFY = 'e-mail notifications are not sent by vipshift; use notify hooks, the event stream or the metrics';
const HEALTH = 'not a vipshift health check setting (inter, timeout, rise, fall); ignored';
const TRACKING = 'only track_interface is supported for tracking';
const GARP = 'vipshift sends its gratuitous ARPs once on becoming master (garp_master_repeat, garp_interval)';

/** The checkers vipshift runs (src/config/check.ts: tcp, http, https, script), and those it cannot. */
const healthChecks: Section = {
  ...Object.fromEntries(['TCP_CHECK', 'HTTP_GET', 'SSL_GET', 'MISC_CHECK'].map((k) => [k, { args: [0, 0], block: 'checker' }])),
  ...Object.fromEntries(
    ['SMTP_CHECK', 'DNS_CHECK', 'UDP_CHECK', 'PING_CHECK', 'FILE_CHECK', 'BFD_CHECK'].map((k) => [
      k,
      { args: [0, 0], block: 'skip', unsupported: 'vipshift checks tcp, http, https and scripts; use a MISC_CHECK script for this one' },
    ]),
  ),
};

/** Notify scripts: a path and its arguments, quoted or not; mapped to the appliance's notify hooks. */
const notify = (...names: string[]): Section => Object.fromEntries(names.map((k) => [k, { args: [1, 64] }]));
const VRRP_NOTIFY = ['notify_master', 'notify_backup', 'notify_fault', 'notify'];
const NOTIFY_STOP: Section = { notify_stop: { args: [1, 64], unsupported: 'vipshift has no stop event for hooks; its shutdown is logged' } };

export const sections: Readonly<Record<SectionName, Section>> = {
  root: {
    global_defs: { args: [0, 0], block: 'global_defs' },
    vrrp_instance: { args: [1, 1], block: 'vrrp_instance' },
    vrrp_sync_group: { args: [1, 1], block: 'vrrp_sync_group' },
    virtual_server: { args: [2, 2], block: 'virtual_server' },
    vrrp_script: { args: [1, 1], block: 'skip', unsupported: TRACKING },
    virtual_server_group: { args: [1, 1], block: 'skip', unsupported: 'virtual_server_group is not supported; list each virtual_server' },
    static_ipaddress: { args: [0, 0], block: 'skip', unsupported: 'static addresses belong to the host network configuration' },
    static_routes: { args: [0, 0], block: 'skip', unsupported: 'static routes belong to the host network configuration' },
    static_rules: { args: [0, 0], block: 'skip', unsupported: 'static rules belong to the host network configuration' },
    net_namespace: { args: [1, 1], unsupported: 'vipshift runs in the namespace it is started in' },
  },

  global_defs: {
    router_id: { args: [1, 1] },
    vrrp_version: { args: [1, 1] },
    vrrp_strict: { args: [0, 0] },
    notification_email: { args: [0, 0], block: 'skip', unsupported: NOTIFY },
    notification_email_from: { args: [1, 1], unsupported: NOTIFY },
    smtp_server: { args: [1, 2], unsupported: NOTIFY },
    smtp_connect_timeout: { args: [1, 1], unsupported: NOTIFY },
    enable_script_security: { args: [0, 0], unsupported: NOTIFY },
    script_user: { args: [1, 2], unsupported: NOTIFY },
    vrrp_skip_check_adv_addr: { args: [0, 0], unsupported: 'vipshift checks every advertisement as RFC 5798 §7.1 says' },
    vrrp_garp_master_delay: { args: [1, 1], unsupported: GARP },
    vrrp_garp_master_repeat: { args: [1, 1] },
    vrrp_garp_master_refresh: { args: [1, 1], unsupported: GARP },
    vrrp_garp_interval: { args: [1, 1] },
    vrrp_mcast_group4: { args: [1, 1], unsupported: 'vipshift advertises to 224.0.0.18 (RFC 5798 §5.1.1.2)' },
  },

  vrrp_instance: {
    state: { args: [1, 1] },
    interface: { args: [1, 1] },
    virtual_router_id: { args: [1, 1] },
    priority: { args: [1, 1] },
    advert_int: { args: [1, 1] },
    version: { args: [1, 1] },
    preempt: { args: [0, 0] },
    nopreempt: { args: [0, 0] },
    preempt_delay: { args: [1, 1] },
    virtual_ipaddress: { args: [0, 0], block: 'lines' },
    unicast_src_ip: { args: [1, 1] },
    unicast_peer: { args: [0, 0], block: 'lines' },
    track_interface: { args: [0, 0], block: 'lines' },
    accept: { args: [0, 0] },
    no_accept: { args: [0, 0] },
    authentication: { args: [0, 0], block: 'skip' },
    virtual_ipaddress_excluded: { args: [0, 0], block: 'lines', unsupported: 'excluded addresses are not moved by vipshift; list them in virtual_ipaddress' },
    virtual_routes: { args: [0, 0], block: 'skip', unsupported: 'virtual routes are not supported' },
    virtual_rules: { args: [0, 0], block: 'skip', unsupported: 'virtual rules are not supported' },
    track_script: { args: [0, 0], block: 'skip', unsupported: TRACKING },
    track_process: { args: [0, 0], block: 'skip', unsupported: TRACKING },
    track_file: { args: [0, 0], block: 'skip', unsupported: TRACKING },
    mcast_src_ip: { args: [1, 1], unsupported: 'vipshift sends from the interface primary address' },
    use_vmac: { args: [0, 1] },
    // vipshift always sends its adverts through the base interface (what this asks keepalived to do).
    vmac_xmit_base: { args: [0, 0] },
    dont_track_primary: { args: [0, 0], unsupported: TRACKING },
    garp_master_delay: { args: [1, 1], unsupported: GARP },
    garp_master_repeat: { args: [1, 1] },
    garp_interval: { args: [1, 1] },
    garp_master_refresh: { args: [1, 1], unsupported: GARP },
    garp_master_refresh_repeat: { args: [1, 1], unsupported: GARP },
    smtp_alert: { args: [0, 1], unsupported: NOTIFY },
    ...notify(...VRRP_NOTIFY),
    ...NOTIFY_STOP,
  },

  vrrp_sync_group: {
    group: { args: [0, 0], block: 'lines' },
    track_interface: { args: [0, 0], block: 'lines', unsupported: 'track interfaces in each vrrp_instance' },
    track_script: { args: [0, 0], block: 'skip', unsupported: TRACKING },
    global_tracking: { args: [0, 0], unsupported: 'track interfaces in each vrrp_instance' },
    smtp_alert: { args: [0, 1], unsupported: NOTIFY },
    ...notify(...VRRP_NOTIFY),
    ...NOTIFY_STOP,
  },

  virtual_server: {
    lb_algo: { args: [1, 1] },
    lvs_sched: { args: [1, 1], alias: 'lb_algo' },
    lb_kind: { args: [1, 1] },
    lvs_method: { args: [1, 1], alias: 'lb_kind' },
    protocol: { args: [1, 1] },
    persistence_timeout: { args: [0, 1] },
    persistence_granularity: { args: [1, 1], unsupported: 'a client is its address: no granularity' },
    delay_loop: { args: [1, 1] },
    real_server: { args: [1, 2], block: 'real_server' },
    sorry_server: { args: [1, 2] },
    virtualhost: { args: [1, 1] },
    alpha: { args: [0, 0], unsupported: HEALTH },
    omega: { args: [0, 0], unsupported: HEALTH },
    quorum: { args: [1, 1], unsupported: HEALTH },
    hysteresis: { args: [1, 1], unsupported: HEALTH },
    ha_suspend: { args: [0, 0], unsupported: HEALTH },
    ops: { args: [0, 0], unsupported: 'one-packet scheduling is not supported' },
  },

  real_server: {
    weight: { args: [1, 1] },
    inhibit_on_failure: { args: [0, 0] },
    uthreshold: { args: [1, 1], unsupported: 'connection thresholds are not supported' },
    lthreshold: { args: [1, 1], unsupported: 'connection thresholds are not supported' },
    ...healthChecks,
    ...notify('notify_up', 'notify_down'),
  },

  /** TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK: keepalived's checker keywords. */
  checker: {
    connect_timeout: { args: [1, 1] },
    connect_port: { args: [1, 1] },
    bindto: { args: [1, 1] },
    retry: { args: [1, 1] },
    nb_get_retry: { args: [1, 1], alias: 'retry' },
    delay_before_retry: { args: [1, 1] },
    delay_loop: { args: [1, 1] },
    url: { args: [0, 0], block: 'url' },
    virtualhost: { args: [1, 1] },
    misc_path: { args: [1, 64] },
    misc_timeout: { args: [1, 1] },
    misc_dynamic: { args: [0, 0], unsupported: 'a script check passes or fails; its exit code does not set the weight' },
    user: { args: [1, 2], unsupported: 'scripts run as the appliance user' },
    warmup: { args: [1, 1], unsupported: HEALTH },
    alpha: { args: [0, 0], unsupported: 'a backend starts up and goes down after fall failures' },
    connect_ip: { args: [1, 1], unsupported: 'checks go to the backend address' },
    bind_port: { args: [1, 1], unsupported: HEALTH },
    fwmark: { args: [1, 1], unsupported: HEALTH },
    log_all_failures: { args: [0, 0], unsupported: 'every state change is logged' },
  },

  url: {
    path: { args: [1, 1] },
    status_code: { args: [1, 8] },
    digest: { args: [1, 1], unsupported: 'a body digest is not checked (use a body regex in vipshift)' },
    virtualhost: { args: [1, 1] },
  },
};

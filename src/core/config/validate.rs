//! Validation: the file's serde structs ([`super::file`]) into the runtime model, one function
//! per section. Every error names the file, the line where known, and the field.

use super::defaults;
use super::file::*;
use super::*;
use toml::Spanned;

/// (first, last, field, line) of a pool, for the overlap check.
type PoolSpan = (u128, u128, String, usize);

/// Parses and validates config text; `file` names it in errors. The syntax of
/// `server.log_level` belongs to the logging backend, so the server checks that one. A
/// `reservations_file` is refused: reading files is the caller's ([`parse_with`]).
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    parse_with(file, text, &mut |p| {
        Err(format!(
            "cannot read {}: this caller reads no files",
            p.display()
        ))
    })
}

/// [`parse`], with `read` giving the text of a file the configuration names (a
/// `reservations_file`), or why it cannot.
pub fn parse_with(
    file: &str,
    text: &str,
    read: &mut dyn FnMut(&std::path::Path) -> Result<String, String>,
) -> Result<Config, ConfigError> {
    let ctx = Ctx {
        file,
        text,
        line_breaks: std::cell::OnceCell::new(),
    };
    let raw: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
        file: file.to_string(),
        line: e.span().map(|s| ctx.line(s.start)),
        field: String::new(),
        message: e.message().trim().to_string(),
    })?;
    validate(&ctx, raw, read)
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    /// Where each line break of `text` is, found once when a line number is first asked for:
    /// every pool and reservation records its line, and counting from the start of the file
    /// each time made a file of 20,000 subnets take 20 s to validate.
    line_breaks: std::cell::OnceCell<Vec<usize>>,
}

impl Ctx<'_> {
    /// The 1-based line of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        let breaks = self.line_breaks.get_or_init(|| {
            self.text
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect()
        });
        // Line breaks before `offset`, plus one.
        breaks.partition_point(|&b| b < offset.min(self.text.len())) + 1
    }
    fn err(
        &self,
        span: Option<std::ops::Range<usize>>,
        field: &str,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: span.map(|s| self.line(s.start)),
            field: field.to_string(),
            message: msg.into(),
        }
    }
}

fn lifetimes(
    ctx: &Ctx,
    base: FileLease,
    over: Option<FileLease>,
    field: &str,
) -> Result<Lifetimes, ConfigError> {
    let o = over.unwrap_or_default();
    let preferred = o
        .preferred_lifetime_secs
        .or(base.preferred_lifetime_secs)
        .unwrap_or(defaults::PREFERRED_LIFETIME_SECS);
    let valid = o
        .valid_lifetime_secs
        .or(base.valid_lifetime_secs)
        .unwrap_or(defaults::VALID_LIFETIME_SECS);
    let t1 = o.t1_secs.or(base.t1_secs).unwrap_or(preferred / 2);
    let t2 = o
        .t2_secs
        .or(base.t2_secs)
        .unwrap_or((preferred as u64 * 4 / 5) as u32);
    if valid == 0 {
        return Err(ctx.err(None, field, "valid_lifetime_secs must be greater than 0"));
    }
    if preferred > valid {
        return Err(ctx.err(
            None,
            field,
            format!(
                "preferred_lifetime_secs ({preferred}) is longer than valid_lifetime_secs ({valid})"
            ),
        ));
    }
    if t1 > t2 {
        return Err(ctx.err(
            None,
            field,
            format!("t1_secs ({t1}) is later than t2_secs ({t2})"),
        ));
    }
    if t2 > preferred {
        return Err(ctx.err(
            None,
            field,
            format!("t2_secs ({t2}) is later than preferred_lifetime_secs ({preferred})"),
        ));
    }
    Ok(Lifetimes {
        preferred_secs: preferred,
        valid_secs: valid,
        t1_secs: t1,
        t2_secs: t2,
    })
}

fn subpools_for(count: u128) -> u32 {
    count.min(SUBPOOLS_PER_POOL_MAX as u128) as u32
}

fn validate(
    ctx: &Ctx,
    raw: FileConfig,
    read: &mut dyn FnMut(&std::path::Path) -> Result<String, String>,
) -> Result<Config, ConfigError> {
    let server = server(ctx, raw.server)?;
    if raw.subnet.is_empty() {
        return Err(ctx.err(
            None,
            "subnet",
            "no [[subnet]] configured: there is nothing to hand out",
        ));
    }
    let global = options_table(ctx, &raw.options, "options")?;
    if global.encoded_len() > defaults::REPLY_OPTIONS_BYTES_MAX {
        return Err(ctx.err(
            None,
            "options",
            format!(
                "the global options take {} bytes; at most {} keep a reply unfragmented",
                global.encoded_len(),
                defaults::REPLY_OPTIONS_BYTES_MAX
            ),
        ));
    }
    let mut subnets: Vec<SubnetConfig> = Vec::new();
    let mut seen = SubnetsSeen::default();
    // (first, last, field, line) of every pool, to find overlaps.
    let mut spans: Vec<PoolSpan> = Vec::new();
    for (si, sub) in raw.subnet.iter().enumerate() {
        let up = Inherited {
            lease: raw.lease,
            options: &global,
            rapid_commit: server.rapid_commit,
        };
        let mut s = subnet(ctx, si, sub, &up, &seen, &mut spans)?;
        s.reservations = reservations(ctx, si, sub.get_ref(), &s, read)?;
        seen.add(si, &s);
        subnets.push(s);
    }
    check_pool_overlaps(ctx, &spans)?;
    let relationships = relationships(ctx, raw.failover, &subnets)?;
    if !relationships.is_empty() {
        // RFC 8156 §1: failover MUST NOT be used for new leases shorter than 30 s (a lease
        // must outlive the partners' exchange about it).
        for (s, raw_s) in subnets.iter().zip(&raw.subnet) {
            if u64::from(s.lifetimes.valid_secs) < defaults::FAILOVER_VALID_LIFETIME_MIN_SECS {
                return Err(ctx.err(
                    Some(raw_s.span()),
                    "valid_lifetime_secs",
                    format!(
                        "subnet {}: {} s; with [failover] leases must be valid for at least {} s (RFC 8156 §1)",
                        s.id,
                        s.lifetimes.valid_secs,
                        defaults::FAILOVER_VALID_LIFETIME_MIN_SECS
                    ),
                ));
            }
        }
    }
    let mut requestors = Vec::new();
    let mut bulk_listen = Vec::new();
    for (i, l) in raw.leasequery.bulk_listen.iter().enumerate() {
        let a: SocketAddrV6 = l.get_ref().parse().map_err(|_| {
            ctx.err(
                Some(l.span()),
                &format!("leasequery.bulk_listen[{i}]"),
                format!(
                    "`{}` is not an IPv6 socket address like [2001:db8::1]:547",
                    l.get_ref()
                ),
            )
        })?;
        bulk_listen.push(a);
    }
    let bulk_connections_max = match &raw.leasequery.bulk_connections_max {
        None => defaults::BULK_LQ_CONNECTIONS_MAX,
        Some(n) if (1..=defaults::BULK_LQ_CONNECTIONS_LIMIT).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            return Err(ctx.err(
                Some(n.span()),
                "leasequery.bulk_connections_max",
                format!(
                    "{} is out of range: 1 to {}",
                    n.get_ref(),
                    defaults::BULK_LQ_CONNECTIONS_LIMIT
                ),
            ));
        }
    };
    for (i, r) in raw.leasequery.requestors.iter().enumerate() {
        let text = r.get_ref().trim();
        // A bare address is that one requestor.
        let p = if text.contains('/') {
            text.parse::<Prefix>()
        } else {
            format!("{text}/128").parse::<Prefix>()
        };
        requestors.push(
            p.map_err(|e| ctx.err(Some(r.span()), &format!("leasequery.requestors[{i}]"), e))?,
        );
    }
    let l = &raw.limits;
    let ias = match &l.ias_per_message_max {
        None => defaults::IAS_PER_MESSAGE_MAX,
        Some(v) if (1..=defaults::IAS_PER_MESSAGE_CEILING).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            return Err(ctx.err(
                Some(v.span()),
                "limits.ias_per_message_max",
                format!("must be 1 to {}", defaults::IAS_PER_MESSAGE_CEILING),
            ));
        }
    };
    let client_rate = l
        .client_rate_per_sec
        .unwrap_or(defaults::CLIENT_RATE_PER_SEC);
    let source_rate = l.source_rate_per_sec.unwrap_or(0);
    let limits = LimitsConfig {
        ias_per_message_max: ias,
        client_rate_per_sec: client_rate,
        // A burst below the rate would refuse what the rate allows.
        client_burst: l
            .client_burst
            .unwrap_or(defaults::CLIENT_BURST)
            .max(client_rate),
        source_rate_per_sec: source_rate,
        source_burst: l.source_burst.unwrap_or(source_rate).max(source_rate),
    };
    Ok(Config {
        server,
        subnets,
        relationships,
        options: global,
        leasequery: LeasequeryConfig {
            requestors,
            bulk_listen,
            bulk_connections_max,
        },
        limits,
    })
}

/// One `options` table at `field`, encoded.
fn options_table(ctx: &Ctx, f: &FileOptions, field: &str) -> Result<OptionSet, ConfigError> {
    options::encode(f).map_err(|e| {
        let at = if e.field.is_empty() {
            field.to_string()
        } else {
            format!("{field}.{}", e.field)
        };
        ctx.err(e.span, &at, e.message)
    })
}

/// `[server]`.
fn server(ctx: &Ctx, s: FileServer) -> Result<ServerConfig, ConfigError> {
    let mut listen = Vec::new();
    for (i, l) in s.listen.iter().enumerate() {
        let a: SocketAddrV6 = l.get_ref().parse().map_err(|_| {
            ctx.err(
                Some(l.span()),
                &format!("server.listen[{i}]"),
                format!(
                    "`{}` is not an IPv6 socket address like [::1]:5547",
                    l.get_ref()
                ),
            )
        })?;
        listen.push(a);
    }
    if listen.is_empty() && s.interfaces.is_empty() {
        return Err(ctx.err(
            None,
            "server",
            "nothing to listen on: set server.listen (unicast addresses) or server.interfaces",
        ));
    }
    let unicast_address = match &s.unicast_address {
        None => None,
        Some(u) => Some(u.get_ref().parse::<Ipv6Addr>().map_err(|_| {
            ctx.err(
                Some(u.span()),
                "server.unicast_address",
                format!("`{}` is not an IPv6 address", u.get_ref()),
            )
        })?),
    };
    let metrics_listen = match &s.metrics_listen {
        None => None,
        Some(m) => Some(m.get_ref().parse::<SocketAddr>().map_err(|_| {
            ctx.err(
                Some(m.span()),
                "server.metrics_listen",
                format!(
                    "`{}` is not an address and port, e.g. \"[::1]:9469\" or \"127.0.0.1:9469\"",
                    m.get_ref()
                ),
            )
        })?),
    };
    let duid = match &s.duid {
        None => None,
        Some(d) => {
            let b = super::options::hex(d.get_ref())
                .map_err(|e| ctx.err(Some(d.span()), "server.duid", e))?;
            if !(3..=130).contains(&b.len()) {
                return Err(ctx.err(
                    Some(d.span()),
                    "server.duid",
                    format!("a DUID is 3 to 130 bytes (RFC 8415 §11.1), not {}", b.len()),
                ));
            }
            Some(b)
        }
    };
    let log_level = s.log_level.unwrap_or_else(|| defaults::LOG_LEVEL.into());
    let server = ServerConfig {
        data_dir: s
            .data_dir
            .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR)),
        listen,
        interfaces: s.interfaces,
        port: s.port.unwrap_or(defaults::DHCP6_SERVER_PORT),
        workers: s.workers.unwrap_or(0),
        log_level,
        rapid_commit: s.rapid_commit.unwrap_or(false),
        preference: s.preference,
        unicast_address,
        sync: s.sync.unwrap_or(true),
        offer_hold_secs: s.offer_hold_secs.unwrap_or(defaults::OFFER_HOLD_SECS),
        decline_hold_secs: s.decline_hold_secs.unwrap_or(defaults::DECLINE_HOLD_SECS),
        keep_ended_secs: s.keep_ended_secs.unwrap_or(defaults::KEEP_ENDED_SECS),
        reclaim_interval_ms: s
            .reclaim_interval_ms
            .unwrap_or(defaults::RECLAIM_INTERVAL_MS)
            .max(defaults::RECLAIM_INTERVAL_MS_MIN),
        map_size_mib: s.map_size_mib.unwrap_or(defaults::MAP_SIZE_MIB),
        commit_interval_us: s.commit_interval_us.unwrap_or(defaults::COMMIT_INTERVAL_US),
        control_socket: s.control_socket,
        metrics_listen,
        duid,
        audit_log: s.audit_log,
    };
    if server.map_size_mib < defaults::MAP_SIZE_MIB_MIN {
        return Err(ctx.err(
            None,
            "server.map_size_mib",
            format!("must be at least {}", defaults::MAP_SIZE_MIB_MIN),
        ));
    }
    if server.commit_interval_us > defaults::COMMIT_INTERVAL_US_MAX {
        return Err(ctx.err(
            None,
            "server.commit_interval_us",
            format!(
                "must be at most {} (100 ms): replies wait up to this long for their commit",
                defaults::COMMIT_INTERVAL_US_MAX
            ),
        ));
    }
    Ok(server)
}

/// What the subnets validated so far hold, indexed so that each new subnet is checked against
/// them in logarithmic time: an ISP's file may list tens of thousands of relayed links, and a
/// scan of the ones before made validation (at start and on every reload) quadratic.
#[derive(Default)]
struct SubnetsSeen {
    /// Subnet ids, with the index of the subnet using each.
    ids: std::collections::HashMap<u32, usize>,
    /// Every prefix (and extra prefix) by its first address: its last, the subnet's id, the
    /// prefix. They never overlap (each was checked before it was added).
    prefixes: std::collections::BTreeMap<u128, (u128, u32, Prefix)>,
    /// Relay Interface-IDs and addresses, with the id of the subnet each selects.
    interface_ids: std::collections::HashMap<Box<[u8]>, u32>,
    relay_addresses: std::collections::HashMap<Ipv6Addr, u32>,
}

impl SubnetsSeen {
    /// The prefix of an earlier subnet overlapping `p`, with that subnet's id.
    fn overlapping(&self, p: &Prefix) -> Option<(u32, Prefix)> {
        // The prefixes are disjoint: only the last one starting at or before p's end can
        // reach into p.
        let (_, (last, id, q)) = self.prefixes.range(..=p.last()).next_back()?;
        (*last >= p.first()).then_some((*id, *q))
    }

    /// Adds subnet `s`, index `si`, once it is valid.
    fn add(&mut self, si: usize, s: &SubnetConfig) {
        self.ids.insert(s.id, si);
        for p in s.prefixes() {
            self.prefixes.insert(p.first(), (p.last(), s.id, *p));
        }
        for b in &s.relay_interface_ids {
            self.interface_ids.insert(b.clone(), s.id);
        }
        for a in &s.relay_addresses {
            self.relay_addresses.insert(*a, s.id);
        }
    }
}

/// What a subnet inherits from the levels above it.
struct Inherited<'a> {
    lease: FileLease,
    options: &'a OptionSet,
    rapid_commit: bool,
}

/// One `[[subnet]]` (index `si`): its prefix, lifetimes and pools, checked against `before`,
/// what the subnets validated so far hold; every pool's span is added to `spans` for the
/// overlap check.
fn subnet(
    ctx: &Ctx,
    si: usize,
    sub: &Spanned<FileSubnet>,
    up: &Inherited,
    before: &SubnetsSeen,
    spans: &mut Vec<PoolSpan>,
) -> Result<SubnetConfig, ConfigError> {
    let (base, global, server_rapid_commit) = (up.lease, up.options, up.rapid_commit);
    let sub = sub.get_ref();
    let sf = format!("subnet[{si}]");
    let id = *sub.id.get_ref();
    if let Some(&prev) = before.ids.get(&id) {
        return Err(ctx.err(
            Some(sub.id.span()),
            &format!("{sf}.id"),
            format!("id {id} is already used by subnet[{prev}]"),
        ));
    }
    let prefix: Prefix = sub
        .prefix
        .get_ref()
        .parse()
        .map_err(|e| ctx.err(Some(sub.prefix.span()), &format!("{sf}.prefix"), e))?;
    let mut extra_prefixes: Vec<Prefix> = Vec::new();
    for (i, e) in sub.extra_prefixes.iter().enumerate() {
        let field = format!("{sf}.extra_prefixes[{i}]");
        let p: Prefix = e
            .get_ref()
            .parse()
            .map_err(|err| ctx.err(Some(e.span()), &field, err))?;
        let overlaps = |q: &Prefix| q.first() <= p.last() && p.first() <= q.last();
        if let Some(q) = std::iter::once(&prefix)
            .chain(&extra_prefixes)
            .find(|q| overlaps(q))
        {
            return Err(ctx.err(
                Some(e.span()),
                &field,
                format!("{p} overlaps this subnet's {q}"),
            ));
        }
        extra_prefixes.push(p);
    }
    for (mine, span, field) in std::iter::once((&prefix, sub.prefix.span(), format!("{sf}.prefix")))
        .chain(
            extra_prefixes
                .iter()
                .zip(&sub.extra_prefixes)
                .enumerate()
                .map(|(i, (p, e))| (p, e.span(), format!("{sf}.extra_prefixes[{i}]"))),
        )
    {
        if let Some((other, o)) = before.overlapping(mine) {
            return Err(ctx.err(
                Some(span),
                &field,
                format!("{mine} overlaps subnet {other} ({o})"),
            ));
        }
    }
    let lt = lifetimes(ctx, base, sub.lease, &format!("{sf}.lease"))?;
    let mut pools = Vec::new();
    for (pi, p) in sub.pools.iter().enumerate() {
        let pf = format!("{sf}.pools[{pi}]");
        let (first, last, span) = match (&p.get_ref().range, &p.get_ref().prefix) {
            (Some(r), None) => {
                let (a, b) = r.get_ref().split_once('-').ok_or_else(|| {
                    ctx.err(
                        Some(r.span()),
                        &format!("{pf}.range"),
                        "expected `first-last`, e.g. 2001:db8::100-2001:db8::1ff",
                    )
                })?;
                let pa = |t: &str| -> Result<u128, ConfigError> {
                    t.trim().parse::<Ipv6Addr>().map(u128::from).map_err(|_| {
                        ctx.err(
                            Some(r.span()),
                            &format!("{pf}.range"),
                            format!("`{}` is not an IPv6 address", t.trim()),
                        )
                    })
                };
                let (a, b) = (pa(a)?, pa(b)?);
                if a > b {
                    return Err(ctx.err(
                        Some(r.span()),
                        &format!("{pf}.range"),
                        "first address is after the last",
                    ));
                }
                (a, b, r.span())
            }
            (None, Some(px)) => {
                let pr: Prefix = px
                    .get_ref()
                    .parse()
                    .map_err(|e| ctx.err(Some(px.span()), &format!("{pf}.prefix"), e))?;
                (pr.first(), pr.last(), px.span())
            }
            _ => {
                return Err(ctx.err(
                    Some(p.span()),
                    &pf,
                    "give exactly one of `range` or `prefix`",
                ));
            }
        };
        let inside = std::iter::once(&prefix)
            .chain(&extra_prefixes)
            .any(|p| p.contains(Ipv6Addr::from(first)) && p.contains(Ipv6Addr::from(last)));
        if !inside {
            return Err(ctx.err(
                Some(span),
                &pf,
                format!(
                    "addresses {}-{} are not all inside one of the subnet's prefixes ({prefix}{})",
                    Ipv6Addr::from(first),
                    Ipv6Addr::from(last),
                    extra_prefixes
                        .iter()
                        .map(|p| format!(", {p}"))
                        .collect::<String>()
                ),
            ));
        }
        // count = last - first + 1, which overflows for ::/0 only; cap it.
        let count = (last - first).saturating_add(1);
        pools.push(PoolConfig {
            kind: ResourceKind::Address,
            first,
            count,
            shift: 0,
            resource_len: 128,
            subpools: subpools_for(count),
            options: options_table(ctx, &p.get_ref().options, &format!("{pf}.options"))?,
            excluded: None,
        });
        spans.push((first, last, pf, ctx.line(span.start)));
    }
    for (pi, p) in sub.pd_pools.iter().enumerate() {
        let pf = format!("{sf}.pd_pools[{pi}]");
        let p = p.get_ref();
        let pr: Prefix = p
            .prefix
            .get_ref()
            .parse()
            .map_err(|e| ctx.err(Some(p.prefix.span()), &format!("{pf}.prefix"), e))?;
        let dl = *p.delegated_len.get_ref();
        if dl > 128 || dl < pr.len {
            return Err(ctx.err(
                Some(p.delegated_len.span()),
                &format!("{pf}.delegated_len"),
                format!(
                    "delegated_len {dl} must be between the pool's prefix length {} and 128",
                    pr.len
                ),
            ));
        }
        if dl - pr.len > 64 {
            return Err(ctx.err(
                Some(p.delegated_len.span()),
                &format!("{pf}.delegated_len"),
                format!(
                    "/{} split into /{dl} gives 2^{} prefixes; at most 2^64 are supported",
                    pr.len,
                    dl - pr.len
                ),
            ));
        }
        let count = 1u128 << (dl - pr.len);
        let excluded = match (&p.excluded_prefix_len, &p.excluded_subnet_id) {
            (None, None) => None,
            (None, Some(id)) => {
                return Err(ctx.err(
                    Some(id.span()),
                    &format!("{pf}.excluded_subnet_id"),
                    "set excluded_prefix_len too",
                ));
            }
            (Some(l), id) => {
                let len = *l.get_ref();
                if len <= dl || len > 128 {
                    return Err(ctx.err(
                        Some(l.span()),
                        &format!("{pf}.excluded_prefix_len"),
                        format!("must be longer than delegated_len ({dl}) and at most 128"),
                    ));
                }
                let subnet_id = id.as_ref().map_or(0, |i| *i.get_ref());
                let bits = u32::from(len - dl);
                if bits < 64 && subnet_id >> bits != 0 {
                    return Err(ctx.err(
                        id.as_ref().map(|i| i.span()),
                        &format!("{pf}.excluded_subnet_id"),
                        format!(
                            "{subnet_id} does not fit the {bits} bits between /{dl} and /{len}"
                        ),
                    ));
                }
                Some(PdExclude { len, subnet_id })
            }
        };
        pools.push(PoolConfig {
            kind: ResourceKind::Prefix,
            first: pr.first(),
            count,
            shift: 128 - dl,
            resource_len: dl,
            subpools: subpools_for(count),
            options: options_table(ctx, &p.options, &format!("{pf}.options"))?,
            excluded,
        });
        spans.push((pr.first(), pr.last(), pf, ctx.line(p.prefix.span().start)));
    }
    if pools.is_empty() {
        return Err(ctx.err(
            Some(sub.prefix.span()),
            &sf,
            "subnet has no pools and no pd_pools",
        ));
    }
    let options = global.overlaid(&options_table(ctx, &sub.options, &format!("{sf}.options"))?);
    // The most one reply can carry: the subnet's options and every pool's on top (a client
    // may hold resources from several pools at once).
    let worst =
        options.encoded_len() + pools.iter().map(|p| p.options.encoded_len()).sum::<usize>();
    if worst > defaults::REPLY_OPTIONS_BYTES_MAX {
        return Err(ctx.err(
            Some(sub.prefix.span()),
            &format!("{sf}.options"),
            format!(
                "a reply in this subnet could carry {worst} bytes of options (global, subnet and pool levels together); at most {} keep it unfragmented",
                defaults::REPLY_OPTIONS_BYTES_MAX
            ),
        ));
    }
    let (relay_interface_ids, relay_addresses) = relay(ctx, &sf, sub, before)?;
    Ok(SubnetConfig {
        rapid_commit: sub.rapid_commit.unwrap_or(server_rapid_commit),
        id,
        prefix,
        extra_prefixes,
        interface: sub.interface.clone(),
        pools,
        lifetimes: lt,
        options,
        reservations: Reservations::default(),
        relay_interface_ids,
        relay_addresses,
    })
}

/// Any two pools (of either kind, in any subnet) must not overlap.
fn check_pool_overlaps(ctx: &Ctx, spans: &[PoolSpan]) -> Result<(), ConfigError> {
    let mut sorted: Vec<_> = spans.iter().collect();
    sorted.sort_by_key(|s| s.0);
    for w in sorted.windows(2) {
        if w[1].0 <= w[0].1 {
            return Err(ConfigError {
                file: ctx.file.to_string(),
                line: Some(w[1].3),
                field: w[1].2.clone(),
                message: format!("overlaps {} (line {})", w[0].2, w[0].3),
            });
        }
    }
    Ok(())
}

fn socket_addr(ctx: &Ctx, v: &Spanned<String>, field: &str) -> Result<SocketAddr, ConfigError> {
    let text = v.get_ref();
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    // A bare address takes the failover port.
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, crate::failover::wire::FAILOVER_PORT));
    }
    Err(ctx.err(
        Some(v.span()),
        field,
        format!(
            "`{text}` is not a socket address like [2001:db8::2]:647 (or an address, port 647)"
        ),
    ))
}

/// `[failover]` or `[[failover]]`: the relationships, each with the subnets it covers.
fn relationships(
    ctx: &Ctx,
    raw: Option<FileFailovers>,
    subnets: &[SubnetConfig],
) -> Result<Vec<FailoverConfig>, ConfigError> {
    let all: Vec<u32> = subnets.iter().map(|s| s.id).collect();
    let list: Vec<(String, Spanned<FileFailover>)> = match raw {
        None => return Ok(Vec::new()),
        Some(FileFailovers::One(f)) => {
            // The section's own span is not kept for a single table: its role's stands in.
            let span = f.role.span();
            vec![("failover".to_string(), Spanned::new(span, *f))]
        }
        Some(FileFailovers::Many(v)) if v.is_empty() => {
            return Err(ctx.err(
                None,
                "failover",
                "an empty list: leave failover out for a server without a partner",
            ));
        }
        Some(FileFailovers::Many(v)) => v
            .into_iter()
            .enumerate()
            .map(|(i, f)| (format!("failover[{i}]"), f))
            .collect(),
    };
    let several = list.len() > 1;
    let mut out: Vec<FailoverConfig> = Vec::new();
    // Which relationship covers each subnet id so far.
    let mut covered: Vec<(u32, usize)> = Vec::new();
    for (i, (at, f)) in list.into_iter().enumerate() {
        let span = f.span();
        let listed = f
            .get_ref()
            .subnets
            .as_ref()
            .map(|s| (s.span(), s.get_ref().clone()));
        let mut r = failover(ctx, &at, f)?;
        r.subnets = match listed {
            None if several => {
                return Err(ctx.err(
                    Some(span),
                    &format!("{at}.subnets"),
                    "with several [[failover]] sections, each names the ids of the subnets it covers, e.g. subnets = [1, 2]",
                ));
            }
            None => all.clone(),
            Some((sspan, ids)) => {
                if ids.is_empty() {
                    return Err(ctx.err(
                        Some(sspan),
                        &format!("{at}.subnets"),
                        "names no subnet: a relationship covers at least one",
                    ));
                }
                for id in &ids {
                    if !all.contains(id) {
                        return Err(ctx.err(
                            Some(sspan.clone()),
                            &format!("{at}.subnets"),
                            format!("no [[subnet]] has id {id}"),
                        ));
                    }
                    if let Some((_, other)) = covered.iter().find(|(s, _)| s == id) {
                        return Err(ctx.err(
                            Some(sspan.clone()),
                            &format!("{at}.subnets"),
                            format!(
                                "subnet {id} is already covered by failover[{other}]: a pool has exactly two partners, so a subnet belongs to one relationship"
                            ),
                        ));
                    }
                    covered.push((*id, i));
                }
                // In the configuration's order, whatever the list's.
                all.iter().copied().filter(|s| ids.contains(s)).collect()
            }
        };
        if several {
            if r.relationship.is_empty() {
                return Err(ctx.err(
                    Some(span),
                    &format!("{at}.relationship"),
                    "with several [[failover]] sections, each needs a relationship name (the same on both partners of that relationship)",
                ));
            }
            if let Some(j) = out.iter().position(|o| o.relationship == r.relationship) {
                return Err(ctx.err(
                    Some(span),
                    &format!("{at}.relationship"),
                    format!("`{}` is also the name of failover[{j}]", r.relationship),
                ));
            }
            if r.relationship.len() > defaults::RELATIONSHIP_NAME_LEN_MAX_SEVERAL {
                return Err(ctx.err(
                    Some(span),
                    &format!("{at}.relationship"),
                    format!(
                        "longer than {} bytes (with several relationships the name is part of a store key)",
                        defaults::RELATIONSHIP_NAME_LEN_MAX_SEVERAL
                    ),
                ));
            }
            // One port on the unspecified address takes it on every address.
            let clash = |a: &SocketAddr, b: &SocketAddr| {
                a.port() == b.port()
                    && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
            };
            if r.role == Role::Secondary
                && let Some(j) = out
                    .iter()
                    .position(|o| o.role == Role::Secondary && clash(&o.listen, &r.listen))
            {
                return Err(ctx.err(
                    Some(span),
                    &format!("{at}.listen"),
                    format!(
                        "failover[{j}] already listens on {}: each relationship where this server is secondary needs its own listen address or port",
                        r.listen
                    ),
                ));
            }
        }
        out.push(r);
    }
    // With one relationship an omitted list covers everything; a given one must too.
    if !covered.is_empty()
        && let Some(s) = all.iter().find(|s| !covered.iter().any(|(c, _)| c == *s))
    {
        return Err(ctx.err(
            None,
            "failover",
            format!(
                "subnet {s} is in no [[failover]] section's subnets: with a partner, every subnet is shared with one of them"
            ),
        ));
    }
    Ok(out)
}

fn failover(ctx: &Ctx, at: &str, f: Spanned<FileFailover>) -> Result<FailoverConfig, ConfigError> {
    let span = f.span();
    let f = f.into_inner();
    let role = match f.role.get_ref().as_str() {
        "primary" => Role::Primary,
        "secondary" => Role::Secondary,
        other => {
            return Err(ctx.err(
                Some(f.role.span()),
                &format!("{at}.role"),
                format!("`{other}` is not a role: use \"primary\" or \"secondary\""),
            ));
        }
    };
    let partner = match &f.partner {
        Some(p) => Some(socket_addr(ctx, p, &format!("{at}.partner"))?),
        None => None,
    };
    if role == Role::Primary && partner.is_none() {
        return Err(ctx.err(
            Some(span),
            &format!("{at}.partner"),
            "the primary connects to its secondary: set partner to the secondary's address, e.g. \"[2001:db8::2]:647\"",
        ));
    }
    let listen = match &f.listen {
        Some(l) => socket_addr(ctx, l, &format!("{at}.listen"))?,
        None => SocketAddr::new(
            std::net::Ipv6Addr::UNSPECIFIED.into(),
            crate::failover::wire::FAILOVER_PORT,
        ),
    };
    let name = f.partner_name.get_ref();
    if rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        || name.parse::<std::net::IpAddr>().is_ok()
    {
        return Err(ctx.err(
            Some(f.partner_name.span()),
            &format!("{at}.partner_name"),
            format!("`{name}` is not a DNS name (the name in the partner's certificate)"),
        ));
    }
    let mclt_secs = f.mclt_secs.unwrap_or(defaults::MCLT_SECS);
    if mclt_secs == 0 {
        return Err(ctx.err(
            Some(span),
            &format!("{at}.mclt_secs"),
            "must be greater than 0",
        ));
    }
    let keepalive_secs = f.keepalive_secs.unwrap_or(defaults::KEEPALIVE_SECS);
    if !(1..=defaults::KEEPALIVE_SECS_MAX).contains(&keepalive_secs) {
        return Err(ctx.err(
            Some(span),
            &format!("{at}.keepalive_secs"),
            format!("must be between 1 and {}", defaults::KEEPALIVE_SECS_MAX),
        ));
    }
    let max_unacked = f.max_unacked.unwrap_or(defaults::MAX_UNACKED);
    if max_unacked == 0 {
        return Err(ctx.err(
            Some(span),
            &format!("{at}.max_unacked"),
            "must be at least 1",
        ));
    }
    let skew_max_secs = f.skew_max_secs.unwrap_or(defaults::SKEW_MAX_SECS);
    if !(1..=defaults::SKEW_MAX_SECS_MAX).contains(&skew_max_secs) {
        return Err(ctx.err(
            Some(span),
            &format!("{at}.skew_max_secs"),
            format!(
                "must be between 1 and {} (synchronise the clocks with NTP instead)",
                defaults::SKEW_MAX_SECS_MAX
            ),
        ));
    }
    let pd_backup_percent = f.pd_backup_percent.unwrap_or(defaults::PD_BACKUP_PERCENT);
    if pd_backup_percent > 100 {
        return Err(ctx.err(
            Some(span),
            &format!("{at}.pd_backup_percent"),
            "must be between 0 and 100",
        ));
    }
    let relationship = f.relationship.unwrap_or_default();
    if relationship.len() > defaults::RELATIONSHIP_NAME_LEN_MAX {
        return Err(ctx.err(
            Some(span),
            &format!("{at}.relationship"),
            format!("longer than {} bytes", defaults::RELATIONSHIP_NAME_LEN_MAX),
        ));
    }
    Ok(FailoverConfig {
        role,
        relationship,
        partner,
        listen,
        partner_name: name.clone(),
        ca: f.ca,
        cert: f.cert,
        key: f.key,
        mclt_secs,
        keepalive_secs,
        auto_partner_down_secs: f.auto_partner_down_secs.filter(|s| *s > 0),
        startup_secs: f.startup_secs.unwrap_or(defaults::STARTUP_SECS),
        max_unacked,
        skew_max_secs,
        reconnect_max_ms: f
            .reconnect_max_ms
            .unwrap_or(defaults::RECONNECT_MAX_MS)
            .max(defaults::RECONNECT_MIN_MS),
        pd_backup_percent,
        subnets: Vec::new(),
    })
}

/// A subnet's reservations: the TOML ones, then the file's; each resource inside one of the
/// subnet's pools of its kind, reserved once.
fn reservations(
    ctx: &Ctx,
    si: usize,
    sub: &FileSubnet,
    s: &SubnetConfig,
    read: &mut dyn FnMut(&std::path::Path) -> Result<String, String>,
) -> Result<Reservations, ConfigError> {
    use reservations::{parse_line, resource, toml_key};
    let sf = format!("subnet[{si}]");
    let mut out = Reservations::default();
    // (kind, resource, reservation id) of every reserved resource: sorted at the end to find
    // a resource reserved twice (cheaper than a hash set for a million).
    let mut taken: Vec<(u8, u128, u32)> = Vec::new();
    let pool_options_max: usize = s.pools.iter().map(|p| p.options.encoded_len()).sum();
    // Checks one reservation's resources and adds it; the error text only.
    let mut add = |r: Reservation, out: &mut Reservations| -> Result<(), String> {
        let id = u32::try_from(out.len()).map_err(|_| "too many reservations".to_string())?;
        for kind in [ResourceKind::Address, ResourceKind::Prefix] {
            for (addr, len) in r.resources(kind) {
                let in_pool = s
                    .pools
                    .iter()
                    .any(|p| p.kind == kind && p.resource_len == len && p.index_of(addr).is_some());
                if !in_pool {
                    let what = match kind {
                        ResourceKind::Address => format!("address {addr}"),
                        ResourceKind::Prefix => format!("prefix {addr}/{len}"),
                    };
                    return Err(format!(
                        "{what} is not one of subnet {}'s pool resources (a reservation must lie inside a pool of its kind, with the pool's delegated length; reservations outside pools are not supported yet)",
                        s.id
                    ));
                }
                taken.push((kind.code(), u128::from(addr), id));
            }
        }
        let worst = s.options.encoded_len() + pool_options_max + r.options().encoded_len();
        if worst > defaults::REPLY_OPTIONS_BYTES_MAX {
            return Err(format!(
                "with this reservation's options a reply could carry {worst} bytes of options; at most {}",
                defaults::REPLY_OPTIONS_BYTES_MAX
            ));
        }
        out.push(r)
    };
    let toml_source = out.source(ctx.file);
    for (ri, fr) in sub.reservations.iter().enumerate() {
        let field = format!("{sf}.reservations[{ri}]");
        let span = Some(fr.span());
        let e = |m: String| ctx.err(span.clone(), &field, m);
        let f = fr.get_ref();
        let key = toml_key(f).map_err(e)?;
        let (mut addresses, mut prefixes) = (Vec::new(), Vec::new());
        for t in f.addresses.iter().chain(&f.prefixes) {
            match resource(t).map_err(e)? {
                (Some(a), _) => addresses.push(a),
                (_, Some(p)) => prefixes.push(p),
                _ => {}
            }
        }
        if addresses.is_empty() && prefixes.is_empty() {
            return Err(e(format!("{key} reserves nothing")));
        }
        let options = options_table(ctx, &f.options, &format!("{field}.options"))?;
        let line = u32::try_from(ctx.line(fr.span().start)).unwrap_or(u32::MAX);
        let r = Reservation::new(key, &addresses, &prefixes, options, toml_source, line);
        add(r, &mut out).map_err(e)?;
    }
    if let Some(path) = &sub.reservations_file {
        let field = format!("{sf}.reservations_file");
        let text = read(path.get_ref()).map_err(|m| ctx.err(Some(path.span()), &field, m))?;
        let name = path.get_ref().display().to_string();
        let source = out.source(&name);
        out.reserve(text.lines().count());
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default();
            let at = |m: String| ConfigError {
                file: name.clone(),
                line: Some(i + 1),
                field: field.clone(),
                message: m,
            };
            let Some((key, addresses, prefixes)) = parse_line(line).map_err(at)? else {
                continue;
            };
            let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let r = Reservation::new(key, &addresses, &prefixes, OptionSet::default(), source, n);
            add(r, &mut out).map_err(at)?;
        }
    }
    taken.sort_unstable();
    if let Some(w) = taken
        .windows(2)
        .find(|w| (w[0].0, w[0].1) == (w[1].0, w[1].1))
    {
        let (first, second) = (w[0].2.min(w[1].2), w[0].2.max(w[1].2));
        let at = out.origin(second);
        let (file, line) = at
            .rsplit_once(':')
            .map_or((at.clone(), None), |(f, l)| (f.to_string(), l.parse().ok()));
        return Err(ConfigError {
            file,
            line,
            field: format!("{sf}.reservations"),
            message: format!(
                "{} is also reserved at {}",
                std::net::Ipv6Addr::from(w[0].1),
                out.origin(first)
            ),
        });
    }
    // The lease table tells reservations apart by a 64-bit number from their key
    // (`ReservationKey::stable_id`): two keys with one number would share their resources.
    // Never seen by chance, but refused rather than trusted.
    let mut ids: Vec<(u64, u32)> = out
        .list()
        .iter()
        .enumerate()
        .map(|(i, r)| (r.key.stable_id(), i as u32))
        .collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ctx.err(
            None,
            &format!("{sf}.reservations"),
            format!(
                "the keys of {} and {} hash alike (64-bit FNV-1a), which the lease table cannot tell apart: change one of them",
                out.origin(w[0].1),
                out.origin(w[1].1)
            ),
        ));
    }
    Ok(out)
}

/// A subnet's `relay` table: Interface-IDs and relay addresses, each selecting one subnet only.
#[allow(clippy::type_complexity)]
fn relay(
    ctx: &Ctx,
    sf: &str,
    sub: &FileSubnet,
    before: &SubnetsSeen,
) -> Result<(Vec<Box<[u8]>>, Vec<Ipv6Addr>), ConfigError> {
    let Some(r) = &sub.relay else {
        return Ok((Vec::new(), Vec::new()));
    };
    let span = Some(r.span());
    let mut ids: Vec<Box<[u8]>> = Vec::new();
    for v in &r.get_ref().interface_ids {
        let field = format!("{sf}.relay.interface_ids");
        let b: Box<[u8]> = reservations::value_bytes(v)
            .map_err(|m| ctx.err(span.clone(), &field, m))?
            .into();
        if let Some(o) = before.interface_ids.get(&b) {
            return Err(ctx.err(
                span.clone(),
                &field,
                format!("Interface-ID `{v}` already selects subnet {o}"),
            ));
        }
        ids.push(b);
    }
    let mut addrs = Vec::new();
    for v in &r.get_ref().addresses {
        let field = format!("{sf}.relay.addresses");
        let a: Ipv6Addr = v.trim().parse().map_err(|_| {
            ctx.err(
                span.clone(),
                &field,
                format!("`{v}` is not an IPv6 address"),
            )
        })?;
        if let Some(o) = before.relay_addresses.get(&a) {
            return Err(ctx.err(
                span.clone(),
                &field,
                format!("relay address {a} already selects subnet {o}"),
            ));
        }
        addrs.push(a);
    }
    Ok((ids, addrs))
}

#[cfg(test)]
mod index_tests {
    use super::*;
    use proptest::prelude::*;

    fn prefix() -> impl Strategy<Value = Prefix> {
        (
            0u8..8,
            any::<u8>(),
            prop::sample::select(vec![60u8, 62, 64, 120, 124, 128]),
        )
            .prop_map(|(hi, lo, len)| {
                let a = (0x2001_0db8u128 << 96) | (u128::from(hi) << 64) | u128::from(lo);
                Prefix {
                    addr: Ipv6Addr::from(a & !host_mask(len)),
                    len,
                }
            })
    }

    proptest! {
        /// The index of the prefixes seen finds an overlap exactly when a scan of them does.
        #[test]
        fn the_prefix_index_finds_an_overlap_when_a_scan_does(
            prefixes in prop::collection::vec(prefix(), 1..40),
        ) {
            let mut seen = SubnetsSeen::default();
            let mut kept: Vec<Prefix> = Vec::new();
            for (i, p) in prefixes.iter().enumerate() {
                let scan = kept.iter().find(|q| q.first() <= p.last() && p.first() <= q.last());
                let found = seen.overlapping(p);
                prop_assert_eq!(found.is_some(), scan.is_some());
                if let Some((_, q)) = found {
                    prop_assert!(q.first() <= p.last() && p.first() <= q.last());
                }
                if scan.is_none() {
                    // As validation does: only a prefix that overlaps nothing is added.
                    seen.prefixes.insert(p.first(), (p.last(), i as u32, *p));
                    kept.push(*p);
                }
            }
        }

        /// Line numbers from the line-break index are those a count from the start gives.
        #[test]
        fn line_numbers_match_a_count_from_the_start(
            text in "[a\n]{0,200}",
            offsets in prop::collection::vec(0usize..260, 1..10),
        ) {
            let ctx = Ctx { file: "t", text: &text, line_breaks: std::cell::OnceCell::new() };
            for o in offsets {
                let end = o.min(text.len());
                let want = text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1;
                prop_assert_eq!(ctx.line(o), want);
            }
        }
    }
}

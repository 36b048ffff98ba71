//! The binding carried by BNDUPD / BNDREPLY: `OPTION_CLIENT_DATA` or a top-level IAPREFIX.

use crate::wire::{
    IA_FIXED_LEN, IA_TA_FIXED_LEN, IAADDR_FIXED_LEN, IaAddr, IaNaIter, IaPdIter, IaPrefix,
    OptionIter, RawOption, Status, WireError, iaprefix_options, nested_options, opt,
};
#[cfg(doc)]
use crate::wire::{IaNa, IaPd};

use super::FailoverWireError;
use super::options::{
    LeaseOptions, LqRelayData, ReconfigureData, Seen, check_option, fopt, lq_relay_data,
    reconfigure_data, u32_of, walk,
};

/// What a BNDUPD / BNDREPLY is about (digest §4): one client's binding, or one delegable
/// prefix with no client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingContent<'a> {
    /// `OPTION_CLIENT_DATA`: all data about one client.
    Client(Binding<'a>),
    /// Top-level `OPTION_IAPREFIX`: a delegable prefix (pool moves, frees); its failover
    /// options via [`LeaseOptionsExt::lease_options`].
    Prefix(IaPrefix<'a>),
}

/// `OPTION_CLIENT_DATA` of a BNDUPD / BNDREPLY (validated view; borrows the message).
///
/// Holds the client's DUID, the leasequery options and one or more IA_NA / IA_TA / IA_PD, each
/// with IAADDR / IAPREFIX options whose failover options are read with
/// [`LeaseOptionsExt::lease_options`]:
///
/// ```text
/// OPTION_CLIENT_DATA { OPTION_CLIENTID, OPTION_LQ_BASE_TIME, [OPTION_VSS],
///     [OPTION_F_RECONFIGURE_DATA], [OPTION_LQ_RELAY_DATA], [OPTION_STATUS_CODE],
///     IA_NA | IA_TA | IA_PD { IAADDR | IAPREFIX { OPTION_F_BINDING_STATUS, ... } } ... }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    options: &'a [u8],
    client_id: Option<&'a [u8]>,
    lq_base_time: Option<u32>,
    clt_time: Option<u32>,
    vss: Option<&'a [u8]>,
    reconfigure_data: Option<ReconfigureData<'a>>,
    lq_relay_data: Option<LqRelayData<'a>>,
    status: Option<Status<'a>>,
}

impl<'a> Binding<'a> {
    /// Validates the contents of an `OPTION_CLIENT_DATA` option.
    ///
    /// Checks every option length, single-instance options (once each), DUID length, fixed
    /// sizes and values of the failover options, and recursively every IA_NA / IA_TA / IA_PD,
    /// IAADDR and IAPREFIX (prefix length at most 128) with the options inside them.
    pub(super) fn parse(data: &'a [u8]) -> Result<Self, FailoverWireError> {
        let mut b = Binding {
            options: data,
            client_id: None,
            lq_base_time: None,
            clt_time: None,
            vss: None,
            reconfigure_data: None,
            lq_relay_data: None,
            status: None,
        };
        let mut seen = Seen::default();
        walk(data, |o: RawOption<'a>| {
            seen.note(o.code)?;
            check_option(o)?;
            match o.code {
                fopt::CLIENTID => b.client_id = Some(o.data),
                fopt::LQ_BASE_TIME => b.lq_base_time = u32_of(o),
                fopt::CLT_TIME => b.clt_time = u32_of(o),
                fopt::VSS => b.vss = Some(o.data),
                fopt::F_RECONFIGURE_DATA => b.reconfigure_data = reconfigure_data(o.data),
                fopt::LQ_RELAY_DATA => b.lq_relay_data = lq_relay_data(o.data),
                fopt::STATUS_CODE => b.status = Status::from_data(o.data),
                fopt::IA_NA => check_ia(o, IA_FIXED_LEN, opt::IAADDR)?,
                fopt::IA_TA => check_ia(o, IA_TA_FIXED_LEN, opt::IAADDR)?,
                fopt::IA_PD => check_ia(o, IA_FIXED_LEN, opt::IAPREFIX)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(b)
    }

    /// The whole `OPTION_CLIENT_DATA` contents (its options area).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.options
    }

    /// `OPTION_CLIENTID`: the DUID of the client most recently on the lease (MUST in BNDUPD).
    pub fn client_id(&self) -> Option<&'a [u8]> {
        self.client_id
    }

    /// `OPTION_LQ_BASE_TIME` (absolute failover time this data was built; MUST in BNDUPD).
    pub fn lq_base_time(&self) -> Option<u32> {
        self.lq_base_time
    }

    /// `OPTION_CLT_TIME` at the `OPTION_CLIENT_DATA` level (the RFC 5007 leasequery placement).
    ///
    /// RFC 8156 puts CLT_TIME inside each IAADDR / IAPREFIX ([`LeaseOptions::clt_time`]), which
    /// is what [`BindingWriter`](super::BindingWriter) emits; this accessor only tolerates
    /// peers that use the leasequery placement.
    pub fn clt_time(&self) -> Option<u32> {
        self.clt_time
    }

    /// `OPTION_VSS` data (present iff the VPN is not the global default one).
    pub fn vss(&self) -> Option<&'a [u8]> {
        self.vss
    }

    /// `OPTION_F_RECONFIGURE_DATA`.
    pub fn reconfigure_data(&self) -> Option<ReconfigureData<'a>> {
        self.reconfigure_data
    }

    /// `OPTION_LQ_RELAY_DATA`.
    pub fn lq_relay_data(&self) -> Option<LqRelayData<'a>> {
        self.lq_relay_data
    }

    /// `OPTION_STATUS_CODE` at this level (BNDREPLY: an error here rejects the whole update).
    pub fn status(&self) -> Option<Status<'a>> {
        self.status
    }

    /// IA_NA options, in order (their IAADDRs via [`IaNa::addresses`]).
    pub fn ia_nas(&self) -> IaNaIter<'a> {
        IaNaIter(OptionIter::new(self.options))
    }

    /// IA_TA options, in order.
    pub fn ia_tas(&self) -> IaTaIter<'a> {
        IaTaIter(OptionIter::new(self.options))
    }

    /// IA_PD options, in order (their IAPREFIXes via [`IaPd::prefixes`]).
    pub fn ia_pds(&self) -> IaPdIter<'a> {
        IaPdIter(OptionIter::new(self.options))
    }

    /// All options inside `OPTION_CLIENT_DATA`, in order.
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter::new(self.options)
    }
}

/// Validates a top-level `OPTION_IAPREFIX` (a delegable prefix with no client).
pub(super) fn parse_pool_prefix(o: RawOption<'_>) -> Result<IaPrefix<'_>, FailoverWireError> {
    check_iaprefix(o)?;
    let bad_len = WireError::BadOptionLength {
        code: o.code,
        len: o.data.len(),
    };
    IaPrefix::from_data(o.data).ok_or(bad_len.into())
}

/// Validates an IA option: fixed part, then its options (Status Code once, `child` options).
fn check_ia(o: RawOption<'_>, fixed: usize, child: u16) -> Result<(), FailoverWireError> {
    let mut seen = Seen::default();
    walk(nested_options(o, fixed)?, |n| {
        seen.note(n.code)?;
        check_option(n)?;
        if n.code == child && child == opt::IAADDR {
            check_iaaddr(n)
        } else if n.code == child && child == opt::IAPREFIX {
            check_iaprefix(n)
        } else {
            Ok(())
        }
    })
}

/// Validates an IA Address option and the failover options inside it.
fn check_iaaddr(o: RawOption<'_>) -> Result<(), FailoverWireError> {
    check_lease_options(nested_options(o, IAADDR_FIXED_LEN)?)
}

/// Validates an IA Prefix option (prefix length at most 128) and the options inside it.
fn check_iaprefix(o: RawOption<'_>) -> Result<(), FailoverWireError> {
    check_lease_options(iaprefix_options(o)?)
}

/// Options inside IAADDR / IAPREFIX: every interpreted option once, with its format checked.
fn check_lease_options(bytes: &[u8]) -> Result<(), FailoverWireError> {
    let mut seen = Seen::default();
    walk(bytes, |n| {
        seen.note(n.code)?;
        check_option(n)
    })
}

/// Identity Association for Temporary Addresses inside a binding (validated view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IaTa<'a> {
    /// Identity Association identifier.
    pub iaid: u32,
    options: &'a [u8],
}

impl<'a> IaTa<'a> {
    fn from_data(data: &'a [u8]) -> Option<Self> {
        let (iaid, options) = data.split_first_chunk::<IA_TA_FIXED_LEN>()?;
        Some(IaTa {
            iaid: u32::from_be_bytes(*iaid),
            options,
        })
    }

    /// IA Address options, in order.
    pub fn addresses(&self) -> impl Iterator<Item = IaAddr<'a>> + use<'a> {
        OptionIter::new(self.options)
            .filter(|o| o.code == opt::IAADDR)
            .filter_map(|o| IaAddr::from_data(o.data))
    }

    /// The IA's Status Code option, if present.
    pub fn status(&self) -> Option<Status<'a>> {
        OptionIter::new(self.options)
            .find(|o| o.code == opt::STATUS_CODE)
            .and_then(|o| Status::from_data(o.data))
    }

    /// All options inside this IA, in order.
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter::new(self.options)
    }
}

/// Iterator over the IA_TA options of a binding.
#[derive(Clone, Debug)]
pub struct IaTaIter<'a>(OptionIter<'a>);

impl<'a> Iterator for IaTaIter<'a> {
    type Item = IaTa<'a>;
    fn next(&mut self) -> Option<IaTa<'a>> {
        self.0
            .by_ref()
            .filter(|o| o.code == opt::IA_TA)
            .find_map(|o| IaTa::from_data(o.data))
    }
}

/// Reads the RFC 8156 failover options of an IAADDR / IAPREFIX view from [`crate::wire`].
pub trait LeaseOptionsExt<'a> {
    /// The failover options inside this IAADDR / IAPREFIX (see [`LeaseOptions::decode`]).
    fn lease_options(&self) -> LeaseOptions<'a>;
}

impl<'a> LeaseOptionsExt<'a> for IaAddr<'a> {
    fn lease_options(&self) -> LeaseOptions<'a> {
        LeaseOptions::decode(self.options())
    }
}

impl<'a> LeaseOptionsExt<'a> for IaPrefix<'a> {
    fn lease_options(&self) -> LeaseOptions<'a> {
        LeaseOptions::decode(self.options())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::wire::BindingStatus;
    use crate::wire::testing::raw;

    fn iaaddr(opts: &[u8]) -> Vec<u8> {
        let mut d = vec![0x20, 1, 0xd, 0xb8];
        d.extend([0; 12]);
        d.extend(100u32.to_be_bytes());
        d.extend(200u32.to_be_bytes());
        d.extend_from_slice(opts);
        raw(opt::IAADDR, &d)
    }

    #[test]
    fn client_data_views() {
        let lease = [
            raw(fopt::F_BINDING_STATUS, &[1]),
            raw(fopt::F_START_TIME_OF_STATE, &[0, 0, 1, 0]),
            raw(fopt::CLT_TIME, &[0, 0, 0, 5]),
        ]
        .concat();
        let mut na = vec![0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2];
        na.extend(iaaddr(&lease));
        let mut ta = vec![0, 0, 0, 8];
        ta.extend(iaaddr(&[]));
        ta.extend(raw(opt::STATUS_CODE, &[0, 2]));
        let cd = [
            raw(fopt::CLIENTID, &[0, 3, 0, 1, 2, 3]),
            raw(fopt::LQ_BASE_TIME, &[0, 0, 2, 0]),
            raw(fopt::IA_NA, &na),
            raw(fopt::IA_TA, &ta),
        ]
        .concat();
        let b = Binding::parse(&cd).unwrap();
        assert_eq!(b.client_id(), Some(&[0, 3, 0, 1, 2, 3][..]));
        assert_eq!(b.lq_base_time(), Some(512));
        assert_eq!(b.ia_pds().count(), 0);
        let ia = b.ia_nas().next().unwrap();
        assert_eq!((ia.iaid, ia.t1, ia.t2), (7, 1, 2));
        let a = ia.addresses().next().unwrap();
        let l = a.lease_options();
        assert_eq!(l.binding_status, Some(BindingStatus::Active));
        assert_eq!(l.start_time_of_state, Some(256));
        assert_eq!(l.clt_time, Some(5));
        let t = b.ia_tas().next().unwrap();
        assert_eq!(t.iaid, 8);
        assert_eq!(t.addresses().count(), 1);
        assert_eq!(t.status().unwrap().code, 2);
        assert_eq!(t.options().count(), 2);
    }

    #[test]
    fn nested_errors() {
        let mut na = vec![0; 12];
        na.extend(iaaddr(&raw(fopt::F_BINDING_STATUS, &[0])));
        assert_eq!(
            Binding::parse(&raw(fopt::IA_NA, &na)),
            Err(FailoverWireError::BadBindingStatus(0))
        );
        let mut pd = vec![0; 12];
        let mut p = vec![0; 25];
        p[8] = 200;
        pd.extend(raw(opt::IAPREFIX, &p));
        assert_eq!(
            Binding::parse(&raw(fopt::IA_PD, &pd)),
            Err(WireError::BadPrefixLength(200).into())
        );
        assert_eq!(
            Binding::parse(&raw(fopt::IA_TA, &[0, 0, 0])),
            Err(WireError::BadOptionLength { code: 4, len: 3 }.into())
        );
        let two = [
            raw(fopt::LQ_BASE_TIME, &[0; 4]),
            raw(fopt::LQ_BASE_TIME, &[0; 4]),
        ]
        .concat();
        assert_eq!(
            Binding::parse(&two),
            Err(WireError::DuplicateOption { code: 100 }.into())
        );
        let p = vec![0; 24];
        assert_eq!(
            parse_pool_prefix(RawOption {
                code: opt::IAPREFIX,
                data: &p
            }),
            Err(WireError::BadOptionLength { code: 26, len: 24 }.into())
        );
    }
}

//! Bootstrap: rendezvous store and launcher environment. Being written for issue 3.

"""`dunning demo`: the sample portfolio (`portfolio`), a stand-in collection agency (`agency`,
also used by the tests) and the simulation that runs the daily flow over business days with a
credit manager and collectors (`simulation`). None of it is used by a real run."""

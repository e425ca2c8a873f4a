"""Collection agency handoff: the case and status documents (`models`), what goes into a case
(`cases`), the agency's API and sending cases through it (`client`), cases as files for agencies
without one (`export`), and applying what the agency reports back (`sync`)."""

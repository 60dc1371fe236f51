"""Slack's vocabulary: object shapes (:mod:`.shapes`) and one constructor per RTM event
type (:mod:`.events`). Nothing here touches the database or the network."""

//! Common English words for passphrases that look chosen by a person.

/// 201 common, inoffensive English words of 3-8 lower-case letters.
pub(crate) const WORDS: &[&str] = &[
    "time", "year", "people", "way", "day", "man", "thing", "woman", "life", "child", "world",
    "school", "state", "family", "student", "group", "country", "problem", "hand", "part", "place",
    "case", "week", "company", "system", "program", "question", "work", "number", "night", "point",
    "home", "water", "room", "mother", "area", "money", "story", "fact", "month", "lot", "right",
    "study", "book", "eye", "job", "word", "business", "issue", "side", "kind", "head", "house",
    "service", "friend", "father", "power", "hour", "game", "line", "end", "member", "law", "car",
    "city", "name", "team", "minute", "idea", "body", "back", "parent", "face", "level", "office",
    "door", "health", "person", "art", "history", "party", "result", "change", "morning", "reason",
    "research", "girl", "moment", "air", "teacher", "force", "foot", "boy", "age", "policy",
    "music", "market", "sense", "nation", "plan", "college", "interest", "course", "class",
    "control", "field", "effort", "role", "rate", "heart", "show", "leader", "light", "voice",
    "wife", "mind", "price", "report", "decision", "son", "view", "relation", "town", "road",
    "arm", "table", "garden", "river", "summer", "winter", "spring", "autumn", "ocean", "forest",
    "mountain", "island", "valley", "desert", "planet", "silver", "golden", "purple", "orange",
    "yellow", "green", "blue", "coffee", "pepper", "butter", "honey", "apple", "cherry", "lemon",
    "mango", "tiger", "eagle", "falcon", "dolphin", "rabbit", "panda", "wolf", "bear", "horse",
    "dragon", "rocket", "piano", "guitar", "violin", "camera", "pencil", "window", "bridge",
    "castle", "harbor", "meadow", "thunder", "storm", "cloud", "sunny", "shadow", "crystal",
    "marble", "copper", "bronze", "cotton", "velvet", "paper", "ticket", "bottle", "candle",
    "pillow", "basket", "jacket", "sunset", "breeze", "canyon", "glacier", "lantern", "compass",
    "anchor", "beacon",
];

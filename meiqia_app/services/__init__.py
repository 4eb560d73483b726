"""The product's rules: pure Python, no Reflex. Every public function that reads
or changes customer data takes the acting user first and checks permissions."""

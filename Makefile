.PHONY: up down test lint bench bootstrap

VENV := .venv/bin

bootstrap:
	@bash scripts/bootstrap.sh

up: bootstrap
	@$(VENV)/backchannel up

down:
	@$(VENV)/backchannel down

lint: bootstrap
	$(VENV)/ruff check .

test: bootstrap
	$(VENV)/ruff check .
	$(VENV)/pytest -q

bench: bootstrap
	@$(VENV)/backchannel bench --messages 200 --receivers 1
	@$(VENV)/backchannel bench --messages 200 --receivers 100

"""Reading real people's CSV files: encodings, delimiters, headers, quotes and bad rows."""

from __future__ import annotations

import io

import pytest

from services.audience.csv_reading import (
    BOM,
    CsvProblem,
    EncodingSniffer,
    Layout,
    Member,
    Rejected,
    field_key,
    layout_of,
    read,
    sniff_delimiter,
)


def _sniffed(data: bytes, chunk: int = 3) -> str:
    sniffer = EncodingSniffer()
    for start in range(0, len(data), chunk):
        sniffer.feed(data[start : start + chunk])
    return sniffer.encoding


def _read(text: str) -> tuple[Layout, list[Member | Rejected]]:
    layout, rows = read(io.StringIO(text, newline=""), text[:65536])
    return layout, list(rows)


class TestEncodingSniffer:
    @pytest.mark.parametrize(
        ("data", "encoding"),
        [
            ("nome,email\nJoão,joao@example.com\n".encode(), "utf-8"),
            (BOM + "nome,email\nJoão,joao@example.com\n".encode(), "utf-8-sig"),
            ("nome;email\nJoão;joao@example.com\n".encode("latin-1"), "latin-1"),
            # Valid UTF-8 for a million lines, then one Latin-1 byte: the whole file is Latin-1.
            (b"email\n" + b"a@example.com\n" * 1000 + "Conceição".encode("latin-1"), "latin-1"),
            # Cut inside a two-byte character: not UTF-8.
            ("email\nJoã".encode()[:-1], "latin-1"),
            (b"", "utf-8"),
        ],
    )
    def test_tells_the_encoding_from_every_byte(self, data: bytes, encoding: str) -> None:
        assert _sniffed(data) == encoding

    def test_a_multibyte_character_split_across_chunks_is_still_utf8(self) -> None:
        data = "email,nome\na@example.com,Conceição\n".encode()

        assert {_sniffed(data, chunk) for chunk in (1, 2, 5, 7)} == {"utf-8"}


class TestSniffDelimiter:
    @pytest.mark.parametrize(
        ("sample", "delimiter"),
        [
            ("nome;email\nAna;ana@example.com\n", ";"),
            ("nome,email\nAna,ana@example.com\n", ","),
            # Commas inside the names, semicolons between columns.
            ('nome;email\n"Souza, Ana";ana@example.com\n"Lima, Bia";bia@example.com\n', ";"),
            ('email,nome\nana@example.com,"Ana; a primeira"\n', ","),
            ("email\nana@example.com\n", ","),
            # The sample's last record is cut off: it does not decide.
            ("nome;email;curso\nAna;ana@example.com;Letras\nBia;bia@exa", ";"),
        ],
    )
    def test_picks_the_delimiter_that_splits_rows_evenly(self, sample: str, delimiter: str) -> None:
        assert sniff_delimiter(sample) == delimiter


class TestFieldKey:
    @pytest.mark.parametrize(
        ("header", "key"),
        [
            ("Curso", "curso"),
            ("Data de Nascimento", "data_de_nascimento"),
            (" Município ", "municipio"),
            ("2º ano", "campo_2o_ano"),
        ],
    )
    def test_a_column_name_becomes_a_template_variable(self, header: str, key: str) -> None:
        assert field_key(header) == key


class TestLayoutOf:
    @pytest.mark.parametrize(
        "header",
        [
            ["nome", "email"],
            ["Name", "E-mail"],
            ["NOME", "EMAIL"],
            [" Nome ", "e_mail"],
            ["nome", "Endereço de e-mail"],
        ],
    )
    def test_finds_the_name_and_email_columns_whatever_their_spelling(self, header: list[str]) -> None:
        layout = layout_of(header, ",")

        assert (layout.name, layout.email, layout.fields, layout.header) == (0, 1, (), True)

    def test_columns_in_any_order_and_the_others_become_fields(self) -> None:
        layout = layout_of(["Curso", "E-mail", "Cidade Natal", "Nome"], ";")

        assert (layout.email, layout.name, layout.width) == (1, 3, 4)
        assert layout.fields == (("curso", 0), ("cidade_natal", 2))

    def test_the_name_column_is_optional(self) -> None:
        assert layout_of(["email"], ",").name is None

    @pytest.mark.parametrize(
        ("header", "message"),
        [
            (["nome", "telefone"], "não tem coluna de e-mail"),
            (["email", "e-mail"], "mais de uma coluna de e-mail"),
            (["email", "Curso", "curso"], "mesmo nome no cabeçalho: curso"),
        ],
    )
    def test_a_header_that_cannot_work_is_refused_with_the_reason(
        self, header: list[str], message: str
    ) -> None:
        with pytest.raises(CsvProblem, match=message):
            layout_of(header, ",")

    def test_a_first_row_holding_an_address_means_there_is_no_header(self) -> None:
        layout = layout_of(["Ana", "ana@example.com"], ",")

        assert (layout.header, layout.email, layout.name, layout.fields) == (False, 1, 0, ())


class TestRead:
    def test_quoted_fields_may_hold_delimiters_quotes_and_line_breaks_and_lines_are_where_records_start(
        self,
    ) -> None:
        text = (
            "nome;email;obs\r\n"
            '"Souza; Ana";ana@example.com;"diz ""olá"""\r\n'
            'Bia;bia@example.com;"linha 1\r\nlinha 2\r\nlinha 3"\r\n'
            "Caio;caio@example;x\r\n"
            "Davi;davi@example.com;y\r\n"
        )

        layout, rows = _read(text)

        assert layout.delimiter == ";"
        assert rows == [
            Member(2, "ana@example.com", "Souza; Ana", ('diz "olá"',)),
            Member(3, "bia@example.com", "Bia", ("linha 1\r\nlinha 2\r\nlinha 3",)),
            Rejected(6, rows[2].reason, "Caio;caio@example;x"),  # type: ignore[union-attr]
            Member(7, "davi@example.com", "Davi", ("y",)),
        ]
        assert isinstance(rows[2], Rejected) and rows[2].reason.startswith("e-mail inválido: ")

    def test_bad_rows_are_rejected_with_their_line_and_reason_and_blank_lines_skipped(self) -> None:
        text = (
            "email,nome\nana@example.com,Ana\n\n,Sem E-mail\nbia@example.com\ncaio@example.com,Caio,extra\n"
        )

        _, rows = _read(text)

        assert rows == [
            Member(2, "ana@example.com", "Ana", ()),
            Rejected(4, "e-mail ausente", ",Sem E-mail"),
            Rejected(5, "a linha tem 1 colunas e o cabeçalho tem 2", "bia@example.com"),
            Rejected(6, "a linha tem 3 colunas e o cabeçalho tem 2", "caio@example.com,Caio,extra"),
        ]

    def test_addresses_are_normalised_and_values_trimmed(self) -> None:
        _, rows = _read("E-MAIL;Nome;Curso\n  Ana@EXAMPLE.com ; Ana Souza ; Letras \n")

        assert rows == [Member(2, "Ana@example.com", "Ana Souza", ("Letras",))]

    def test_a_file_without_header_starts_at_line_one(self) -> None:
        _, rows = _read("ana@example.com\nbia@example.com\n")

        assert [(r.line, r.email) for r in rows if isinstance(r, Member)] == [
            (1, "ana@example.com"),
            (2, "bia@example.com"),
        ]

    @pytest.mark.parametrize("text", ["", "\n\n"])
    def test_an_empty_file_is_a_problem(self, text: str) -> None:
        with pytest.raises(CsvProblem, match="vazio"):
            _read(text)

    def test_a_record_the_csv_module_cannot_read_is_a_problem_naming_its_line(self) -> None:
        _, rows = read(
            io.StringIO('email,obs\na@example.com,"' + "x" * 200_000 + '"\n', newline=""), "email,obs\n"
        )

        with pytest.raises(CsvProblem, match=r"^linha 2: o arquivo não pode ser lido como CSV"):
            list(rows)

"""Builds office documents holding secrets (`make DIR TOKEN EMAIL`), and reads documents back
with the same libraries (`read DIR`), printing {file: [every text the library finds]} as JSON.
Used by tests/it/documents.rs: the writers are the real consumers' libraries, so the views
veilfs rebuilds are checked by what those libraries can open and find in them."""
import json
import os
import sys


def make(d, token, email):
    import docx
    from docx.oxml.ns import qn
    from docx.oxml import OxmlElement

    doc = docx.Document()
    doc.core_properties.author = email
    doc.core_properties.last_modified_by = email
    doc.core_properties.title = "Quarterly revenue plan"
    sec = doc.sections[0]
    sec.header.paragraphs[0].text = "Header contact " + email
    sec.footer.paragraphs[0].text = "Footer confidential page"
    doc.add_paragraph("Quarterly revenue grew nicely in spring.")
    p = doc.add_paragraph("Deploy key ")
    # The token split across two runs, as Word does at a formatting boundary.
    p.add_run(token[:10]).bold = True
    p.add_run(token[10:])
    p.add_run(" rotates monthly.")
    t = doc.add_table(rows=1, cols=2)
    t.cell(0, 0).text = "Owner"
    t.cell(0, 1).text = email
    c = doc.add_paragraph("Reviewed by legal.")
    doc.add_comment(c.runs, text="Ask " + email + " about wording", author="Reviewer")
    # A tracked insertion by an author named by their address.
    ins = OxmlElement("w:ins")
    ins.set(qn("w:id"), "90")
    ins.set(qn("w:author"), email)
    ins.set(qn("w:date"), "2024-01-01T00:00:00Z")
    r = OxmlElement("w:r")
    wt = OxmlElement("w:t")
    wt.text = "Inserted sentence mentioning " + token + " again."
    r.append(wt)
    ins.append(r)
    doc.add_paragraph("Tracked change follows.")._p.append(ins)
    doc.save(os.path.join(d, "report.docx"))

    import openpyxl
    from openpyxl.comments import Comment

    wb = openpyxl.Workbook()
    wb.properties.creator = email
    ws = wb.active
    ws.title = "Budget"
    ws.append(["Item", "Amount", "Contact"])
    ws.append(["Servers", 1200, email])
    ws.append(["Licenses", 300, "token " + token])
    ws["A5"] = "Approved by finance"
    ws["A5"].comment = Comment("ping " + email, "Auditor")
    wb.save(os.path.join(d, "budget.xlsx"))

    from pptx import Presentation
    from pptx.util import Inches

    pr = Presentation()
    pr.core_properties.author = email
    s = pr.slides.add_slide(pr.slide_layouts[1])
    s.shapes.title.text = "Roadmap overview"
    s.placeholders[1].text = "Launch checklist uses " + token
    s.notes_slide.notes_text_frame.text = "Speaker notes: call " + email
    pr.save(os.path.join(d, "deck.pptx"))

    from odf.opendocument import OpenDocumentText, OpenDocumentSpreadsheet, OpenDocumentPresentation
    from odf import text as otext, table as otable, meta as ometa, draw, style

    odt = OpenDocumentText()
    odt.meta.addElement(ometa.InitialCreator(text=email))
    odt.text.addElement(otext.P(text="Minutes of the planning meeting."))
    odt.text.addElement(otext.P(text="Credentials " + token + " were shared by " + email))
    odt.save(os.path.join(d, "minutes.odt"))

    ods = OpenDocumentSpreadsheet()
    ods.meta.addElement(ometa.InitialCreator(text=email))
    tab = otable.Table(name="Sheet1")
    for row in (["Vendor", "Contact"], ["Acme", email], ["Key", token]):
        tr = otable.TableRow()
        for v in row:
            tc = otable.TableCell(valuetype="string")
            tc.addElement(otext.P(text=v))
            tr.addElement(tc)
        tab.addElement(tr)
    ods.spreadsheet.addElement(tab)
    ods.save(os.path.join(d, "vendors.ods"))

    odp = OpenDocumentPresentation()
    odp.meta.addElement(ometa.InitialCreator(text=email))
    ps = style.PageLayout(name="PL")
    odp.automaticstyles.addElement(ps)
    mp = style.MasterPage(name="Default", pagelayoutname=ps)
    odp.masterstyles.addElement(mp)
    page = draw.Page(masterpagename=mp)
    frame = draw.Frame(width="10cm", height="3cm", x="1cm", y="1cm")
    box = draw.TextBox()
    box.addElement(otext.P(text="Pitch outline for " + email))
    box.addElement(otext.P(text="Demo token " + token))
    frame.addElement(box)
    page.addElement(frame)
    odp.presentation.addElement(page)
    odp.save(os.path.join(d, "pitch.odp"))


def odf_texts(path):
    from odf.opendocument import load
    from odf import text as otext, meta as ometa
    from odf.element import Text

    doc = load(path)

    def walk(n, out):
        if n.nodeType == n.TEXT_NODE:
            out.append(str(n.data))
        for c in n.childNodes:
            walk(c, out)

    out = []
    for p in doc.getElementsByType(otext.P):
        parts = []
        walk(p, parts)
        out.append("".join(parts))
    for c in doc.getElementsByType(ometa.InitialCreator):
        parts = []
        walk(c, parts)
        out.append("".join(parts))
    return out


def read(d):
    import docx
    import openpyxl
    from pptx import Presentation

    res = {}
    p = os.path.join(d, "report.docx")
    doc = docx.Document(p)
    t = [par.text for par in doc.paragraphs]
    t += [c.text for row in doc.tables[0].rows for c in row.cells]
    sec = doc.sections[0]
    t += [par.text for par in sec.header.paragraphs] + [par.text for par in sec.footer.paragraphs]
    t += [c.text for c in doc.comments]
    t += [doc.core_properties.author, doc.core_properties.last_modified_by, doc.core_properties.title]
    for el in doc.element.body.iter():
        if el.tag.endswith("}ins"):
            t.append("ins-author:" + el.get("{http://schemas.openxmlformats.org/wordprocessingml/2006/main}author"))
            t.append("".join(x.text or "" for x in el.iter() if x.tag.endswith("}t")))
    res["report.docx"] = t

    wb = openpyxl.load_workbook(os.path.join(d, "budget.xlsx"))
    ws = wb["Budget"]
    t = [str(c.value) for row in ws.iter_rows() for c in row if c.value is not None]
    t += [ws["A5"].comment.text if ws["A5"].comment else "", wb.properties.creator or ""]
    res["budget.xlsx"] = t

    pr = Presentation(os.path.join(d, "deck.pptx"))
    t = []
    for s in pr.slides:
        for sh in s.shapes:
            if sh.has_text_frame:
                t.append(sh.text_frame.text)
        t.append(s.notes_slide.notes_text_frame.text)
    t.append(pr.core_properties.author)
    res["deck.pptx"] = t

    for n in ("minutes.odt", "vendors.ods", "pitch.odp"):
        res[n] = odf_texts(os.path.join(d, n))
    print(json.dumps(res))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        read(sys.argv[2])

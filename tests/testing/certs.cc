#include "tests/testing/certs.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "tests/testing/process.h"

namespace switchboard::testing {
namespace {

absl::Status Openssl(const std::vector<std::string>& args) {
  ExitResult r = RunToExit("/usr/bin/openssl", args, absl::Seconds(30));
  if (r.code != 0) {
    return absl::InternalError(absl::StrCat("openssl ", args.front(), " failed: ", r.output));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<CertFiles> MakeCa(const std::string& dir, const std::string& name) {
  CertFiles ca{absl::StrCat(dir, "/", name, ".pem"), absl::StrCat(dir, "/", name, ".key")};
  absl::Status s = Openssl(
      {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-keyout", ca.key, "-out", ca.cert, "-days", "3", "-subj", "/CN=" + name, "-addext",
       "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
  if (!s.ok()) return s;
  return ca;
}

absl::StatusOr<CertFiles> MakeLeaf(const CertFiles& ca, const std::string& dir,
                                   const std::string& name, const std::string& cn,
                                   const std::string& san) {
  CertFiles leaf{absl::StrCat(dir, "/", name, ".pem"), absl::StrCat(dir, "/", name, ".key")};
  std::string csr = absl::StrCat(dir, "/", name, ".csr");
  std::string ext = absl::StrCat(dir, "/", name, ".ext");
  {
    std::ofstream out(ext);
    out << "basicConstraints=CA:FALSE\n"
        << "keyUsage=critical,digitalSignature,keyEncipherment\n"
        << "extendedKeyUsage=serverAuth,clientAuth\n"
        << "subjectAltName=" << san << "\n";
  }
  absl::Status s =
      Openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", leaf.key, "-out", csr, "-subj", "/CN=" + cn});
  if (!s.ok()) return s;
  s = Openssl({"x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial",
               absl::StrCat(rand() & 0x7fffffff), "-days", "2", "-out", leaf.cert, "-extfile",
               ext});
  if (!s.ok()) return s;
  return leaf;
}

}  // namespace switchboard::testing
